#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DesklineCore
import Dispatch
import Foundation
import NIOPosix
import Synchronization

/// How much of each log readers may see while a group commit is writing to it.
///
/// A batch registers a log's committed length before its first write to it and withdraws it once
/// the batch is durable (or rolled back). Readers measure the file first (its size, or its whole
/// content) and look here second, through ``visibleLength(_:measure:)``: whatever they measured
/// beyond a registered length is cut, so nobody ever sees a line that is not yet fsync'd. (A
/// registration made after the measure does no harm: the measure could not have seen its bytes.)
///
/// Undoing lines is the one case where that order is not enough: a reader could measure a
/// batch's lines, then find the registration already withdrawn because the lines were cut, not
/// because they became durable. Every undo (a rollback, or a cut it left pending) counts itself
/// here after cutting and before withdrawing anything, and a reader that sees the count change
/// while it measures measures again.
///
/// A log a rollback could not cut back (its `ftruncate` or `fdatasync` failed) stays hidden beyond
/// its committed length (``PendingCut``) until the tenant's writer manages to cut it.
final class LogVisibility: Sendable {
    /// Lines of a rolled-back batch still in a log: readers see `length` bytes of it at most.
    struct PendingCut: Equatable, Sendable {
        /// The log's committed length.
        var length: Int64
        /// The undone batch created the log (its directory entry was never synced).
        var created: Bool
    }

    private struct State {
        var committed: [String: Int64] = [:]
        var uncut: [String: PendingCut] = [:]
        var undos = 0
    }

    private let state = Mutex(State())

    /// The length readers may see of `path`, or nil if the whole file is committed.
    func limit(_ path: String) -> Int64? {
        state.withLock { state in
            switch (state.committed[path], state.uncut[path]?.length) {
            case let (a?, b?): min(a, b)
            case let (a, b): a ?? b
            }
        }
    }

    /// How much of `path` a reader may use: `measure` reads or sizes the file (on the file
    /// descriptor that will be read) and returns its length; it runs again if lines were undone
    /// meanwhile.
    func visibleLength(_ path: String, measure: () throws -> Int64) rethrows -> Int64 {
        while true {
            let before = state.withLock { $0.undos }
            let length = try measure()
            let limit = self.limit(path)
            if state.withLock({ $0.undos }) == before { return min(length, limit ?? length) }
        }
    }

    /// How much of `path` the tenant's writer may use: all of it, its own batch's lines
    /// included, except lines of a rolled-back batch still waiting for their cut.
    func writerVisibleLength(_ path: String, measure: () throws -> Int64) rethrows -> Int64 {
        let length = try measure()
        return min(length, pendingCut(path)?.length ?? length)
    }

    func hide(_ path: String, beyond length: Int64) {
        state.withLock { $0.committed[path] = length }
    }

    func reveal(_ paths: some Sequence<String>) {
        state.withLock { state in
            for path in paths { state.committed.removeValue(forKey: path) }
        }
    }

    /// A batch was undone: its logs are cut back, except `uncut`, whose lines stay hidden until
    /// the writer cuts them. Call before the batch's ``reveal(_:)``.
    func rolledBack(uncut: [String: PendingCut]) {
        state.withLock { state in
            state.undos += 1
            state.uncut.merge(uncut) { old, new in PendingCut(length: min(old.length, new.length), created: old.created || new.created) }
        }
    }

    func pendingCut(_ path: String) -> PendingCut? {
        state.withLock { $0.uncut[path] }
    }

    /// The pending cuts of logs under `directory` (a tenant's), by path.
    func pendingCuts(under directory: String) -> [String: PendingCut] {
        state.withLock { $0.uncut.filter { $0.key.hasPrefix(directory) } }
    }

    /// The log was cut back to its committed length, durably (an undo: readers that measured it
    /// before measure again).
    func cutDone(_ path: String) {
        state.withLock { state in
            state.undos += 1
            state.uncut.removeValue(forKey: path)
        }
    }
}

/// Failures to inject into write batches and account changes, for tests of the failure paths (a
/// full disk or a dying device on a chosen file at a chosen step). Empty in production.
final class FaultInjection: Sendable {
    /// `cut`: a rollback's (or a later batch's) `ftruncate` of a log or the journal back to its
    /// committed length. `write` and `sync` of an atomic replace are those of its temp file (the
    /// path is the replaced file's); `syncDirectory` is the directory's path; `makeDirectory`,
    /// `link` (an old version kept by hard link) and `remove` are account changes' steps.
    enum Step: Sendable { case write, sync, cut, rename, syncDirectory, makeDirectory, link, remove }

    private struct Fault {
        var step: Step
        var pathSuffix: String
        var errno: Int32
        /// Matching steps to let through first.
        var skipping: Int
    }

    private struct State {
        var faults: [Fault] = []
        /// A fault on whatever step comes after `steps` more (see ``failStep(after:errno:)``);
        /// `sticky`: and on every step after it.
        var countdown: (steps: Int, errno: Int32, sticky: Bool)?
    }

    private let state = Mutex(State())

    /// Makes the next `step` on a file whose path ends with `pathSuffix` fail with `errno` (once),
    /// after letting `skipping` such steps through.
    func failNext(_ step: Step, pathSuffix: String, errno: Int32 = ENOSPC, skipping: Int = 0) {
        state.withLock { $0.faults.append(Fault(step: step, pathSuffix: pathSuffix, errno: errno, skipping: skipping)) }
    }

    /// Makes the step after `count` more steps (0: the very next), whatever it is, fail with
    /// `errno` (once): a test walks a write through every one of its steps by raising `count`
    /// until the write gets through without meeting the fault.
    func failStep(after count: Int, errno: Int32 = ENOSPC) {
        state.withLock { $0.countdown = (count, errno, false) }
    }

    /// Makes every step from the one after `count` more on fail (until disarmed): nothing
    /// changes on disk from then on, as if the process had died there.
    func failSteps(after count: Int, errno: Int32 = EIO) {
        state.withLock { $0.countdown = (count, errno, true) }
    }

    /// Whether the fault armed by ``failStep(after:errno:)`` or ``failSteps(after:errno:)`` has
    /// not fired yet (and disarms it).
    func disarmStepFault() -> Bool {
        state.withLock { state in
            defer { state.countdown = nil }
            return state.countdown != nil
        }
    }

    func check(_ step: Step, _ path: String) throws {
        let injected = state.withLock { state -> Int32? in
            if let countdown = state.countdown {
                if countdown.steps == 0 {
                    if !countdown.sticky { state.countdown = nil }
                    return countdown.errno
                }
                state.countdown = (countdown.steps - 1, countdown.errno, countdown.sticky)
            }
            guard let i = state.faults.firstIndex(where: { $0.step == step && path.hasSuffix($0.pathSuffix) }) else { return nil }
            if state.faults[i].skipping > 0 {
                state.faults[i].skipping -= 1
                return nil
            }
            return state.faults.remove(at: i).errno
        }
        if let injected {
            let operation = switch step {
            case .write: "write"
            case .sync: "fsync"
            case .cut: "truncate"
            case .rename: "rename"
            case .syncDirectory: "fsync directory"
            case .makeDirectory: "mkdir"
            case .link: "link"
            case .remove: "unlink"
            }
            throw DurableFile.IOError(operation: operation, path: path, errno: injected)
        }
    }
}

/// The appends of one group commit: every log line written by the jobs of one batch, made durable
/// together by one record in the tenant's ``Journal`` (one `fdatasync`, however many logs the
/// batch touched), or all undone.
///
/// Used by one thread at a time (the tenant's writer). Jobs in the batch read the files directly
/// and so see the batch's own earlier lines; everyone else reads through ``LogVisibility``.
final class WriteBatch {
    private struct OpenLog {
        var fd: Int32
        /// Committed length: where a rollback cuts back to.
        var base: off_t
        var end: off_t
        var created: Bool
        /// What this batch appended (from `base`), for the journal.
        var bytes = Data()
    }

    private var logs: [String: OpenLog] = [:]
    private let visibility: LogVisibility
    private let faults: FaultInjection?
    /// Logs the writer kept open from its previous batches, and takes back at the end.
    private let keptOpen: OpenLogFiles?
    private let onTornTail: (String, Int64) -> Void
    /// Lines written so far (a job that fails after writing spoils the whole batch).
    private(set) var appendCount = 0
    /// Set once a write failed: nothing more is written and the batch is rolled back.
    private(set) var failure: (any Error)?
    /// The events the batch's jobs numbered, in order: their lines are written at the end of the
    /// batch (`FileStore.writeEventLines`), and they are published once the batch is durable.
    var events: [TicketEvent] = []
    /// The numbers of those whose ticket and entry are the batch's ticket log line of that entry
    /// (their event-log line names it instead of repeating it).
    var eventsStoredWithTicketLine = Set<Int>()

    init(visibility: LogVisibility, faults: FaultInjection? = nil, keptOpen: OpenLogFiles? = nil,
         onTornTail: @escaping (String, Int64) -> Void) {
        self.visibility = visibility
        self.faults = faults
        self.keptOpen = keptOpen
        self.onTornTail = onTornTail
    }

    func fail(_ error: any Error) {
        if failure == nil { failure = error }
    }

    /// Appends whole lines to the log at `path` (created if missing). Not durable until ``commit()``.
    func append(_ data: Data, to path: String) throws {
        var log = try openLog(path)
        do {
            try faults?.check(.write, path)
            try DurableFile.writeAll(log.fd, data, path: path, at: log.end)
        } catch {
            fail(error)
            throw error
        }
        log.end += off_t(data.count)
        log.bytes.append(data)
        logs[path] = log
        appendCount += 1
    }

    private func openLog(_ path: String) throws -> OpenLog {
        if let log = logs[path] { return log }
        if visibility.pendingCut(path) == nil, let kept = keptOpen?.take(path) {
            // Its length is known (only the writer appends, and it committed all of it), unless
            // something else in this process changed the file meanwhile (a repair, an import,
            // a test): then it is opened again, like one that was not kept.
            var info = stat()
            if fstat(kept.fd, &info) == 0, info.st_nlink > 0, info.st_size == kept.length {
                visibility.hide(path, beyond: Int64(kept.length))
                let log = OpenLog(fd: kept.fd, base: kept.length, end: kept.length, created: false)
                logs[path] = log
                return log
            }
            close(kept.fd)
        }
        // (Opened first without creating it: whether it existed, without an `access` call.)
        var existed = true
        var fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 && errno == ENOENT {
            existed = false
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else {
            let error = DurableFile.IOError(operation: "open", path: path, errno: errno)
            fail(error)
            throw error
        }
        do {
            // Lines of a rolled-back batch that could not be cut then (the writer tries again
            // before each batch): cut them now, durably, before anything is appended after them
            // (readers do not see them meanwhile).
            var created = !existed
            if let pending = visibility.pendingCut(path) {
                try Self.cutBack(fd, path, to: pending.length, removing: false, faults: faults)
                visibility.cutDone(path)
                created = created || pending.created
            }
            // A last line without its newline is an unfinished write a crash left behind (never
            // acknowledged): cut it before appending, so a log never has a torn line inside.
            let size = lseek(fd, 0, SEEK_END)
            let clean = try DurableFile.lengthWithoutTornLine(fd, path: path)
            // Hidden before anything changes: no reader sees a line before it is durable, nor
            // reads into a tail being cut.
            visibility.hide(path, beyond: Int64(clean))
            if size > clean {
                guard ftruncate(fd, clean) == 0 else { throw DurableFile.IOError(operation: "truncate", path: path, errno: errno) }
                onTornTail(path, Int64(size - clean))
            }
            let log = OpenLog(fd: fd, base: clean, end: clean, created: created)
            logs[path] = log
            return log
        } catch {
            close(fd)
            visibility.reveal([path])
            if !existed { unlink(path) }
            fail(error)
            throw error
        }
    }

    /// Makes every line of the batch durable: one journal record with all of them, synced. The
    /// logs themselves are synced later, by the journal's checkpoint.
    func commit(to journal: Journal) throws {
        do {
            try journal.commit(logs.map { path, log in
                Journal.Entry(path: path, offset: log.base, bytes: log.bytes, created: log.created)
            }, faults: faults)
        } catch {
            fail(error)
            throw error
        }
    }

    /// Undoes the batch: every log is cut back to its committed length (new logs to nothing,
    /// then removed) and the cut synced. Returns the logs that could not be cut (with the
    /// error): their lines stay hidden from readers, and the tenant's writer cuts them later
    /// (``LogVisibility/PendingCut``).
    @discardableResult
    func rollback() -> [(path: String, cut: LogVisibility.PendingCut, error: DurableFile.IOError)] {
        var failed: [(path: String, cut: LogVisibility.PendingCut, error: DurableFile.IOError)] = []
        for (path, log) in logs {
            let cut = LogVisibility.PendingCut(length: log.created ? 0 : Int64(log.base), created: log.created)
            do {
                try Self.cutBack(log.fd, path, to: cut.length, removing: cut.created, faults: faults)
            } catch {
                failed.append((path, cut, error as? DurableFile.IOError ?? DurableFile.IOError(operation: "truncate", path: path, errno: EIO)))
            }
        }
        // Counted before `end()` withdraws the batch's registrations (see LogVisibility).
        visibility.rolledBack(uncut: Dictionary(uniqueKeysWithValues: failed.map { ($0.path, $0.cut) }))
        return failed
    }

    /// Cuts the log open as `fd` back to `length` (what is committed of it) and makes the cut
    /// durable. `removing` (a log an undone batch created, cut to nothing): then removes it and
    /// syncs its directory, so that a crash cannot bring it back with the undone lines; left
    /// behind, an empty log holds nothing (readers skip it, the next batch appends to it). The
    /// cut comes first, so a reader that has the file open sees it empty.
    static func cutBack(_ fd: Int32, _ path: String, to length: Int64, removing: Bool, faults: FaultInjection?) throws {
        try faults?.check(.cut, path)
        guard ftruncate(fd, off_t(length)) == 0 else { throw DurableFile.IOError(operation: "truncate", path: path, errno: errno) }
        if removing {
            unlink(path)
            try DurableFile.syncDirectory((path as NSString).deletingLastPathComponent)
        } else {
            guard fdatasync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: path, errno: errno) }
        }
    }

    /// Closes the logs (or, after a commit, hands them back to the writer to keep open) and lets
    /// readers see what they hold now. Call exactly once, after ``commit()`` or ``rollback()``.
    func end() {
        // Kept open with those of earlier batches (up to the capacity): closing what a batch did
        // not touch made a writer whose batches each touch a few of many busy tickets reopen
        // nearly every log it wrote. (A failed batch's writer closes them all.)
        for (path, log) in logs {
            if failure == nil, let keptOpen {
                keptOpen.keep(path, OpenLogFiles.File(fd: log.fd, length: log.end))
            } else {
                close(log.fd)
            }
        }
        keptOpen?.batchEnded()
        visibility.reveal(logs.keys)
        logs = [:]
    }
}

/// How many logs all writers of a store together keep open between their batches (see
/// ``OpenLogFiles``): the store's share of the process's open files, however many tenants are
/// busy at once.
final class OpenLogBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Takes one file's share; false if none is left.
    func take() -> Bool {
        var current = used.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func give(_ count: Int = 1) {
        if count > 0 { used.subtract(count, ordering: .relaxed) }
    }

    var inUse: Int { used.load(ordering: .relaxed) }
}

/// The logs a tenant's writer keeps open from one batch to the next, so that a busy ticket's
/// log is not opened, checked for a torn tail and closed again for every batch. Dropped
/// (closed) when a batch fails, and a while after the writer runs out of work
/// (``TenantWriter/idleLogsKept``); at most ``capacity`` files, and no more than the store's
/// ``OpenLogBudget`` has left. Used by the running batch of one writer only (a writer runs one
/// batch at a time), or by the close of an idle writer's logs, which no batch runs beside.
final class OpenLogFiles: @unchecked Sendable {
    struct File {
        var fd: Int32
        /// Everything in it is committed: the next batch appends here.
        var length: off_t
        /// The batch that last kept it (see ``batchEnded()``).
        var keptAt = 0
    }

    /// A busy tenant writes to many logs at once (a ticket's, its inboxes', the event log): at
    /// 64, a tenant with 100 busy tickets reopened a third of its logs in every batch (`open`,
    /// `lseek`, a read of the last byte: 7% of the writer's time at 5,000 messages/s). The
    /// store's budget still bounds the total: four tenants busy on that many logs at once hold
    /// all of it, and a fifth reopens its logs every batch (at 64, a seventeenth did).
    static let capacity = 256
    private var files: [String: File] = [:]
    private let budget: OpenLogBudget?
    /// Batches ended (see ``batchEnded()``).
    private var batches = 0

    init(budget: OpenLogBudget? = nil) { self.budget = budget }

    var count: Int { files.count }

    func take(_ path: String) -> File? {
        guard let file = files.removeValue(forKey: path) else { return nil }
        budget?.give()
        return file
    }

    func keep(_ path: String, _ file: File) {
        // Full: the log kept longest ago makes room (a busy log is not shut out by quiet ones).
        if files.count >= Self.capacity, let oldest = files.min(by: { $0.value.keptAt < $1.value.keptAt }) {
            close(oldest.value.fd)
            files[oldest.key] = nil
            budget?.give()
        }
        if budget?.take() ?? true {
            var file = file
            file.keptAt = batches
            files[path] = file
        } else {
            close(file.fd)
        }
    }

    /// After each batch. Every ``capacity`` batches, closes the logs that none of the last
    /// ``capacity`` batches wrote (so a log stays open 256 to 511 batches after its last write):
    /// a busy writer keeps its logs from batch to batch, but not one it moved past (an event log
    /// segment, later removed) or a ticket gone quiet, for long.
    func batchEnded() {
        batches &+= 1
        guard batches % Self.capacity == 0 else { return }
        let stale = files.filter { batches &- $0.value.keptAt > Self.capacity }
        for (path, file) in stale {
            close(file.fd)
            files[path] = nil
        }
        budget?.give(stale.count)
    }

    func closeAll() {
        for file in files.values { close(file.fd) }
        budget?.give(files.count)
        files = [:]
    }

    deinit { closeAll() }
}

/// Threads that only wait in `fsync`: a batch hands them its files so the syncs overlap. They
/// are many because they use no CPU; the thread pools of the event loops and the file store stay
/// free meanwhile.
enum SyncThreads {
    private static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    /// Runs `body` for every element, concurrently when there is more than one, and waits for
    /// all; rethrows the first error.
    static func forEach<T>(_ items: [T], _ body: @escaping (T) throws -> Void) throws {
        guard items.count > 1 else {
            if let item = items.first { try body(item) }
            return
        }
        let errors = Mutex<[any Error]>([])
        let group = DispatchGroup()
        let work = UnsafeTransfer((items, body))
        // The first item runs here, the others on the sync threads at the same time.
        for index in items.indices.dropFirst() {
            group.enter()
            pool.submit { _ in
                defer { group.leave() }
                do {
                    try work.value.1(work.value.0[index])
                } catch {
                    errors.withLock { $0.append(error) }
                }
            }
        }
        do {
            try body(items[0])
        } catch {
            errors.withLock { $0.append(error) }
        }
        group.wait()
        if let first = errors.withLock({ $0.first }) { throw first }
    }
}

/// Hands a value to other threads where the caller guarantees it is used safely (here: read
/// only, while the caller waits).
private struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
