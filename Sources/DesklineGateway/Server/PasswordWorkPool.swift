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
/// The pool's threads run at the lowest scheduling priority (`SCHED_IDLE`): a derivation uses a
/// core only while nothing else wants it, so a login storm slows logins, not the sessions' traffic.
public final class PasswordWorkPool: BlockingExecutor {
    private let pool: NIOThreadPool
    private let limit: Int
    private let inFlight = Atomic<Int>(0)
    private let taken = Atomic<Int>(0)

    /// Password checks taken so far (run, or waiting to), not counting those refused as busy.
    public var checksTaken: Int { taken.load(ordering: .relaxed) }

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
        taken.add(1, ordering: .relaxed)
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

    /// Gives the calling thread the lowest priority: Linux's `SCHED_IDLE` class, which any
    /// ordinary thread preempts at once, and nice 19 should that be refused. (Both apply per
    /// thread: `0` names the calling thread.) Measured with an scrypt loop in another process:
    /// at nice 19 it raised the fan-out p99 2.5-3.5x, under `SCHED_IDLE` not at all.
    private static func lowerPriority() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
        var parameters = sched_param()
        parameters.sched_priority = 0
        let schedIdle: Int32 = 5 // SCHED_IDLE (linux/sched.h; Glibc's module does not export it)
        _ = sched_setscheduler(0, schedIdle, &parameters)
        #endif
    }

    /// Stops the threads once queued work is done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
