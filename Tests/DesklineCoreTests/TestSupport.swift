@testable import DesklineCore
import Foundation
import Synchronization

/// Runs blocking work inline. Fine in tests: the test hashing cost is ~1 ms.
struct InlineExecutor: BlockingExecutor {
    func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T {
        try work()
    }
}

/// scrypt with N=1024: same code path as production, a hundred times cheaper.
let testCost = PasswordHashingCost(n: 1024, r: 8, p: 1)

/// An account service on a fresh in-memory store (Core's tests need a store, not a backend).
func makeAccounts() -> (AccountService, InMemoryStore) {
    let store = InMemoryStore()
    return (AccountService(store: store, hasher: PasswordHasher(cost: testCost), passwordWork: InlineExecutor()), store)
}

/// Runs work inline and counts how many jobs (password derivations) it ran.
final class CountingExecutor: BlockingExecutor {
    private let count = Mutex(0)
    var runs: Int { count.withLock { $0 } }

    func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T {
        count.withLock { $0 += 1 }
        return try work()
    }
}
