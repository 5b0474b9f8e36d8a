import DesklineCore
import Foundation
import Logging
import NIOPosix
import Synchronization

/// What a tenant's writer remembers between batches. Only the writer touches it, one batch at a
/// time; after a failed batch it is forgotten and loaded again from the files.
struct TenantMemory {
    /// Last ticket and call numbers handed out (loaded lazily from the directory listings).
    var lastTicket: Int?
    var lastCall: Int?
    /// The last event number handed out (loaded lazily from the event log's last line).
    var lastEvent: Int?
    /// Whether this tenant's files were checked after an unclean stop.
    var recovered = false
    /// The state of recently written tickets and the last id of recently written inboxes, as
    /// their logs' last lines say (only the writer appends to them), so a write need not read
    /// and decode the last line first. Bounded: forgotten when full.
    private(set) var tickets: [TicketID: Ticket] = [:]
    private(set) var inboxes: [UserID: Int] = [:]
    static let remembered = 4096

    init(recovered: Bool = false) { self.recovered = recovered }

    mutating func remember(_ ticket: Ticket) {
        if tickets.count >= Self.remembered, tickets[ticket.id] == nil { tickets = [:] }
        tickets[ticket.id] = ticket
    }

    mutating func remember(inbox user: UserID, lastId: Int) {
        if inboxes.count >= Self.remembered, inboxes[user] == nil { inboxes = [:] }
        inboxes[user] = lastId
    }
}

/// The one writer of a tenant's tickets, calls and inboxes, with group commit.
///
/// Writes are queued as jobs. One batch at a time takes every queued job (up to
/// ``maximumBatch``), runs them one after another against a ``WriteBatch`` (they append without
/// syncing), makes the batch durable with one synced record in the tenant's ``Journal``, and
/// only then resumes every job's caller. So concurrent writes share their fsyncs, while each
/// caller still waits for its own data to be durable. Tenants have their own writers and never
/// wait for each other. Each batch is its own work item on the store's thread pool, so however
/// many tenants are busy, none holds a thread between batches.
///
/// A busy writer (jobs already waiting when a batch ends) starts its next batch no sooner than
/// ``groupCommitInterval`` after the previous one started, or as soon as ``enoughToStart`` jobs
/// wait, so that more writes share each batch. An idle writer starts at once.
final class TenantWriter: Sendable {
    /// A queued write: runs in a batch and returns what settles it once the batch is durable or
    /// undone (given the batch's failure), which returns how to answer its caller. The writer
    /// settles a batch's jobs, publishes its events, then answers the callers.
    typealias Job = @Sendable (WriteBatch, inout TenantMemory) -> Settle
    typealias Settle = @Sendable ((any Error)?) -> Answer
    typealias Answer = @Sendable () -> Void

    static let maximumBatch = 256
    /// A busy writer stops waiting for the group commit interval once this many jobs wait: as
    /// many as one session pipelines (`SessionHandler.maximumInFlight`; a session cannot queue
    /// more before its replies). A lone bot's burst rarely gets there within the interval (it
    /// refills its window one command at a time), so bursts do wait: `deskline-bench burst`
    /// measured 18,000-30,000 acknowledged/s with 2 ms, 31,000-43,000 with 0.
    static let enoughToStart = 64

    private struct Queue {
        var jobs: [Job] = []
        /// A batch is running, or waiting to run: the writer is working through its queue.
        var draining = false
        /// The next batch waits for the group commit interval; `enqueue` starts it once enough
        /// jobs wait.
        var waitingForJobs = false
        /// Counts those waits, so that a wait's timer does nothing once its batch started early.
        var waitGeneration = 0
        /// When the writer last ran out of work.
        var idleSince = ContinuousClock.now
        /// The timer that closes an idle writer's logs is set (one at a time: it sets itself
        /// again while the writer works).
        var closeScheduled = false
    }

    let tenant: TenantID
    /// The tenant's directory (its logs are under it).
    private let directory: String
    private let queue = Mutex(Queue())
    /// The logs the writer's batches wrote, kept open for the next ones (used by the running
    /// batch only, or by the close of an idle writer's logs, which no batch runs beside).
    private let keptOpen: OpenLogFiles
    /// How long a writer that ran out of work keeps its logs open for the next write.
    let idleLogsKept: Duration
    /// How far apart a busy writer starts its batches (zero: as soon as the previous is durable).
    let groupCommitInterval: Duration
    private let memory = Mutex(TenantMemory())
    private let journal: Mutex<Journal>
    private let threadPool: NIOThreadPool
    private let visibility: LogVisibility
    private let faults: FaultInjection
    private let logger: Logger
    /// Batches committed or undone, and the jobs they ran (jobs per batch: how many writes
    /// shared each round of fsyncs).
    let batches = Atomic<Int>(0)
    let jobs = Atomic<Int>(0)
    /// Runs once per writer, before its first batch, after an unclean stop.
    private let recover: @Sendable (inout TenantMemory) -> Void
    /// Takes each durable batch's events, in commit order (the store's event feed).
    private let published: @Sendable ([TicketEvent]) -> Void
    /// Runs after a batch's jobs, before its commit: writes what the jobs left for the end of the
    /// batch (the event log's lines, one write for all), or fails the batch.
    private let beforeCommit: @Sendable (WriteBatch) -> Void

    init(tenant: TenantID, directory: String, threadPool: NIOThreadPool, visibility: LogVisibility, faults: FaultInjection,
         openLogBudget: OpenLogBudget? = nil, groupCommitInterval: Duration, idleLogsKept: Duration, logger: Logger,
         beforeCommit: @escaping @Sendable (WriteBatch) -> Void = { _ in },
         published: @escaping @Sendable ([TicketEvent]) -> Void = { _ in },
         recover: @escaping @Sendable (inout TenantMemory) -> Void) {
        self.tenant = tenant
        self.directory = directory
        self.keptOpen = OpenLogFiles(budget: openLogBudget)
        self.groupCommitInterval = groupCommitInterval
        self.idleLogsKept = idleLogsKept
        self.journal = Mutex(Journal(tenantDir: directory))
        self.threadPool = threadPool
        self.visibility = visibility
        self.faults = faults
        self.logger = logger
        self.recover = recover
        self.beforeCommit = beforeCommit
        self.published = published
    }

    /// Runs `work` in the tenant's next batch and returns its result once the batch is durable.
    ///
    /// A `DesklineError` thrown before the job wrote anything refuses this job alone. Any failure
    /// after it wrote (or of the batch's fsync) undoes the whole batch and fails all its jobs
    /// with `storage`: nothing of it was acknowledged, so nothing of it stays.
    ///
    /// `whenQueued` is called once the job is queued (later jobs run after it; also when the
    /// pool is shutting down and the job has already failed); `whenStored`
    /// runs on the writer once the batch is durable, before the caller resumes and before the
    /// batch's events are published, and the jobs of a writer run it in the order they were
    /// queued.
    func write<T: Sendable>(whenQueued: (@Sendable () -> Void)? = nil, whenStored: (@Sendable (T) -> Void)? = nil,
                            _ work: @escaping @Sendable (WriteBatch, inout TenantMemory) throws -> T) async throws(DesklineError) -> T {
        do {
            return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let job: Job = { batch, memory in
                    if let failure = batch.failure {
                        return { _ in { continuation.resume(throwing: failure) } }
                    }
                    let written = batch.appendCount
                    do {
                        let value = try work(batch, &memory)
                        return { failure in
                            if let failure { return { continuation.resume(throwing: failure) } }
                            whenStored?(value)
                            return { continuation.resume(returning: value) }
                        }
                    } catch {
                        if batch.appendCount == written && batch.failure == nil {
                            return { _ in { continuation.resume(throwing: error) } }
                        }
                        batch.fail(error)
                        return { failure in { continuation.resume(throwing: failure ?? error) } }
                    }
                }
                enqueue(job)
                whenQueued?()
            }
        } catch let error as DesklineError {
            throw error
        } catch {
            logger.error("storage operation failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
            throw .storage("the store could not complete the operation; nothing was changed")
        }
    }

    /// Syncs the logs written since the last checkpoint and empties the journal.
    func checkpoint() throws {
        try journal.withLock { try checkpoint($0) }
    }

    private func checkpoint(_ journal: Journal) throws {
        do {
            // The journal records the cuts a rollback could not make (see `runBatch`): it is
            // kept until they are made.
            let pending = visibility.pendingCuts(under: directory + "/")
            guard pending.isEmpty else {
                throw DurableFile.IOError(operation: "checkpoint (logs still to be cut back)", path: pending.keys.sorted()[0], errno: EIO)
            }
            try journal.checkpoint()
        } catch {
            logger.error("a journal checkpoint failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
            throw error
        }
    }

    /// For tests: holds this writer until the returned closure is called (once): returns once
    /// the batch running now (if any) is done, and writes queued from then on wait in the queue
    /// (and share the next batch). The writer counts as working meanwhile, as if a batch that
    /// started now were running, so on release a busy writer waits for the group commit
    /// interval as after any batch.
    ///
    /// No thread is held: a hold that parked a thread of the store's pool (a job blocked in the
    /// batch) took one of NIO's shared pool's two threads here, and two tests holding at once
    /// stalled every store on that pool.
    func hold() async -> @Sendable () -> Void {
        while !queue.withLock({ queue -> Bool in
            guard !queue.draining else { return false }
            queue.draining = true
            return true
        }) {
            try? await Task.sleep(for: .milliseconds(1))
        }
        let start = ContinuousClock.now
        return { self.scheduleNext(after: start, busy: self.queue.withLock { !$0.jobs.isEmpty }) }
    }

    /// Whether a batch is queued or running.
    var isBusy: Bool { queue.withLock { $0.draining } }
    /// Jobs waiting for the next batch.
    var queuedJobs: Int { queue.withLock { $0.jobs.count } }

    private func enqueue(_ job: @escaping Job) {
        let start = queue.withLock { queue -> Bool in
            queue.jobs.append(job)
            if queue.waitingForJobs, queue.jobs.count >= Self.enoughToStart {
                // Enough to start before the group commit interval is over.
                queue.waitingForJobs = false
                return true
            }
            if queue.draining { return false }
            queue.draining = true
            return true
        }
        if start { submitBatch() }
    }

    /// Runs the next batch on the store's thread pool. Each batch is a work item of its own, so
    /// a busy writer holds no thread between its batches, nor while it waits for the group commit
    /// interval: other tenants' writers and every reader get their turn.
    private func submitBatch() {
        threadPool.submit { state in
            guard case .active = state else {
                self.failQueued(DesklineError.storage("the server is shutting down; nothing was changed"))
                return
            }
            self.runBatch()
        }
    }

    private func failQueued(_ error: any Error) {
        keptOpen.closeAll()
        let jobs = queue.withLock { queue -> [Job] in
            defer {
                queue.jobs = []
                queue.draining = false
                queue.waitingForJobs = false
            }
            return queue.jobs
        }
        let batch = WriteBatch(visibility: visibility, onTornTail: { _, _ in })
        batch.fail(error)
        var memory = TenantMemory()
        for job in jobs { job(batch, &memory)(error)() }
    }

    /// Runs one batch of the queued jobs, then starts the next one (see ``scheduleNext(after:busy:)``).
    /// Only one batch of a writer runs or waits to run at a time (`draining`).
    private func runBatch() {
        let start = ContinuousClock.now
        let jobs = queue.withLock { queue -> [Job] in
            let jobs = Array(queue.jobs.prefix(Self.maximumBatch))
            queue.jobs.removeFirst(jobs.count)
            return jobs
        }
        guard !jobs.isEmpty else { return scheduleNext(after: start, busy: false) }
        makePendingCuts()
        let logger = self.logger
        batches.add(1, ordering: .relaxed)
        self.jobs.add(jobs.count, ordering: .relaxed)
        let batch = WriteBatch(visibility: visibility, faults: faults, keptOpen: keptOpen) { path, bytes in
            logger.notice("cut the torn last line of a log (an unfinished write, never acknowledged)",
                          metadata: ["path": "\(path)", "bytes": "\(bytes)"])
        }
        let settles = memory.withLock { memory in
            if !memory.recovered {
                recover(&memory)
                memory.recovered = true
            }
            return jobs.map { $0(batch, &memory) }
        }
        if batch.failure == nil { beforeCommit(batch) }
        if batch.failure == nil {
            journal.withLock { journal in
                guard (try? batch.commit(to: journal)) != nil, journal.needsCheckpoint else { return }
                // The batch is durable (in the journal) either way; a failed checkpoint is
                // logged and tried again after the next batch.
                try? checkpoint(journal)
            }
        }
        // Jobs queued while this batch ran came from other writers than its own (a caller's next
        // write can only come after this batch resumes it): then the writer is busy.
        let busy = queue.withLock { !$0.jobs.isEmpty }
        var failure: DesklineError?
        if let error = batch.failure {
            let uncut = batch.rollback()
            for (path, _, cutError) in uncut {
                logger.error("could not cut a log back after a failed write batch; its undone lines stay hidden, and the writer cuts them before its next batches",
                             metadata: ["path": "\(path)", "error": "\(cutError)"])
            }
            if !uncut.isEmpty {
                // Also in the journal, for a restart before the writer manages: replay cuts each
                // log after its last journaled line, here the committed length (no bytes).
                journal.withLock { journal in
                    do {
                        try journal.commit(uncut.map { Journal.Entry(path: $0.path, offset: off_t($0.cut.length), bytes: Data(), created: $0.cut.created) },
                                           faults: faults)
                    } catch {
                        logger.error("could not record in the journal where to cut logs back", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                    }
                }
            }
            memory.withLock { $0 = TenantMemory(recovered: true) }
            keptOpen.closeAll()
            logger.error("a write batch failed and was undone", metadata: ["tenant": "\(tenant)", "jobs": "\(jobs.count)", "error": "\(error)"])
            failure = .storage("the store could not complete the operation; nothing was changed")
        }
        batch.end()
        let answers = settles.map { $0(failure) }
        // In commit order: one batch of a writer at a time gets here. After the jobs' `whenStored`
        // (so whoever hears of a change can read it) and before the callers are answered (so the
        // pushes are on their way first, and an answer need not wait for them).
        if failure == nil { published(batch.events) }
        for answer in answers { answer() }
        scheduleNext(after: start, busy: busy)
    }

    /// Cuts the logs a rollback could not cut back (``LogVisibility/PendingCut``), before a batch
    /// (so no batch of this tenant runs meanwhile); those that still fail stay pending. A log the
    /// undone batch created is removed, as the rollback would have.
    private func makePendingCuts() {
        for (path, pending) in visibility.pendingCuts(under: directory + "/") {
            do {
                let fd = open(path, O_WRONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    guard errno == ENOENT else { throw DurableFile.IOError(operation: "open", path: path, errno: errno) }
                    // Removed already; its removal is made durable.
                    if pending.created { try DurableFile.syncDirectory((path as NSString).deletingLastPathComponent) }
                    visibility.cutDone(path)
                    continue
                }
                defer { close(fd) }
                try WriteBatch.cutBack(fd, path, to: pending.length, removing: pending.created, faults: faults)
                visibility.cutDone(path)
                logger.notice("cut a log back after an earlier failed write batch", metadata: ["path": "\(path)"])
            } catch {
                logger.error("could not cut a log back yet", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
    }

    /// After a batch that started at `start`: stops once the queue is empty (the logs kept open
    /// are closed after ``idleLogsKept``, unless it works again by then), else starts the next batch at once,
    /// or, for a busy writer, ``groupCommitInterval`` after `start` or once ``enoughToStart`` jobs
    /// wait, whichever comes first (a timer, not a waiting thread).
    private func scheduleNext(after start: ContinuousClock.Instant, busy: Bool) {
        enum Next { case idle, now, wait(Duration, generation: Int) }
        let remaining = start + groupCommitInterval - .now
        let next = queue.withLock { queue -> Next in
            if queue.jobs.isEmpty { return .idle }
            guard busy, remaining > .zero, queue.jobs.count < Self.enoughToStart else { return .now }
            queue.waitingForJobs = true
            queue.waitGeneration &+= 1
            return .wait(remaining, generation: queue.waitGeneration)
        }
        switch next {
        case .now:
            submitBatch()
        case .wait(let remaining, let generation):
            Self.after(remaining) {
                // Unless enough jobs started the batch early (`enqueue`).
                let due = self.queue.withLock { queue -> Bool in
                    guard queue.waitingForJobs, queue.waitGeneration == generation else { return false }
                    queue.waitingForJobs = false
                    return true
                }
                if due { self.submitBatch() }
            }
        case .idle:
            // (Asked while no batch can run beside this.)
            let keepsLogs = keptOpen.count > 0
            // Jobs queued meanwhile are taken by a next batch at once; none are left behind.
            let (idle, setTimer) = queue.withLock { queue -> (Bool, Bool) in
                guard queue.jobs.isEmpty else { return (false, false) }
                queue.draining = false
                queue.idleSince = .now
                guard keepsLogs, !queue.closeScheduled else { return (true, false) }
                queue.closeScheduled = true
                return (true, true)
            }
            guard idle else { return submitBatch() }
            if setTimer { closeIdleLogs(after: idleLogsKept) }
        }
    }

    /// Closes the logs kept open once the writer has been idle for ``idleLogsKept``: a writer
    /// that is not busy holds none for long. Closing them as soon as the queue ran dry made a
    /// writer under steady light load (a batch at a time, each emptying the queue) reopen every
    /// log for every batch: an `open`, an `lseek` and a read of the last byte per log, 3% of the
    /// server's CPU at 5,000 messages/s. One timer per writer at a time, which sets itself again
    /// while the writer works: a timer per idle moment (hundreds a second under light load) cost
    /// more than the opens it saved.
    private func closeIdleLogs(after delay: Duration) {
        Self.after(delay) {
            enum Next { case close, later(Duration) }
            // Taken like a batch (`draining`), so that no batch uses the logs while they close.
            let next = self.queue.withLock { queue -> Next in
                if queue.draining { return .later(self.idleLogsKept) }
                let idleFor = ContinuousClock.now - queue.idleSince
                if idleFor < self.idleLogsKept { return .later(self.idleLogsKept - idleFor) }
                queue.draining = true
                queue.closeScheduled = false
                return .close
            }
            if case .later(let wait) = next { return self.closeIdleLogs(after: wait) }
            // On the store's pool, not this timer queue, which every writer's group commit uses.
            self.threadPool.submit { _ in
                self.keptOpen.closeAll()
                // Then as after a batch: jobs queued meanwhile start one, else the writer is idle.
                self.scheduleNext(after: .now, busy: false)
            }
        }
    }

    /// Fires the group commit intervals' timers (they only hand the next batch to the pool) and
    /// closes idle writers' logs.
    private static let timers = DispatchQueue(label: "deskline.store.group-commit")

    /// Runs `body` on ``timers`` once `delay` is over.
    private static func after(_ delay: Duration, _ body: @escaping @Sendable () -> Void) {
        let (seconds, attoseconds) = delay.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        timers.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds), execute: body)
    }
}
