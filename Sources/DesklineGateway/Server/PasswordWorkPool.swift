#if canImport(Glibc)
import Glibc
#endif
import DesklineCore
import NIOPosix
import Synchronization

/// Runs password derivations on a small dedicated thread pool, so at most `concurrency` run at
/// once and the event loops always keep CPU. At most `queueLimit` more may wait; beyond that
/// work is refused with ``DesklineError/busy(_:)`` instead of piling up.
///
/// The pool's threads run at the lowest scheduling priority (nice 19): a derivation uses a core
/// only while nothing else wants it, so a login storm slows logins, not the sessions' traffic.
public final class PasswordWorkPool: BlockingExecutor {
    private let pool: NIOThreadPool
    private let limit: Int
    private let inFlight = Atomic<Int>(0)

    public init(concurrency: Int, queueLimit: Int) {
        precondition(concurrency > 0 && queueLimit >= 0)
        self.pool = NIOThreadPool(numberOfThreads: concurrency)
        self.limit = concurrency + queueLimit
        pool.start()
    }

    public func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T {
        let before = inFlight.add(1, ordering: .relaxed).oldValue
        defer { inFlight.subtract(1, ordering: .relaxed) }
        guard before < limit else {
            throw .busy("The server is busy checking passwords; retry in a few seconds.")
        }
        do {
            return try await pool.runIfActive { () throws -> T in
                Self.lowerPriority()
                return try work()
            }
        } catch let error as DesklineError {
            throw error
        } catch {
            throw .busy("The server is shutting down.")
        }
    }

    /// Gives the calling thread the lowest priority. (On Linux nice applies per thread, and
    /// `who` 0 names the calling thread, not the whole process.)
    private static func lowerPriority() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
        #endif
    }

    /// Stops the threads once queued work is done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
