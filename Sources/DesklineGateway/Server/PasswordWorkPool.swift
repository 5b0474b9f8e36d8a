import DesklineCore
import NIOPosix
import Synchronization

/// Runs password derivations on a small dedicated thread pool, so at most `concurrency` run at
/// once and the event loops always keep CPU. At most `queueLimit` more may wait; beyond that
/// work is refused with ``DesklineError/busy(_:)`` instead of piling up.
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
            return try await pool.runIfActive { () throws -> T in try work() }
        } catch let error as DesklineError {
            throw error
        } catch {
            throw .busy("The server is shutting down.")
        }
    }

    /// Stops the threads once queued work is done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
