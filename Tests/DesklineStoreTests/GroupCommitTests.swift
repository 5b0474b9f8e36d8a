import DesklineCore
@testable import DesklineStore
import Dispatch
import Foundation
import NIOPosix
import Testing

/// The tenant writer: group commit, all-or-nothing batches, readers that never see a line
/// before it is durable, and recovery after an unclean stop that runs per tenant, lazily.
struct GroupCommitTests {
    let root = NSTemporaryDirectory() + "deskline-commit-" + UUID().uuidString
    let acme = TenantID(rawValue: "acme")!
    let globex = TenantID(rawValue: "globex")!
    let author = UserID(rawValue: "u1")!

    func seeded(tickets: Int = 2, threadPool: NIOThreadPool = .singleton, groupCommitInterval: Duration = .zero,
                idleLogsKept: Duration = .seconds(1)) async throws -> (FileStore, CustomerID) {
        let store = try await FileStore(root: root, threadPool: threadPool, groupCommitInterval: groupCommitInterval,
                                        idleLogsKept: idleLogsKept)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        try await store.createTenant(Tenant(id: globex, name: "Globex", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        for i in 0..<tickets { _ = try await store.openTicket(customer: c.id, subject: "t\(i)", in: acme, at: Date()) }
        return (store, c.id)
    }

    func message(_ text: String) -> TicketEntryDraft {
        TicketEntryDraft(kind: .message, authorId: author, authorName: "Ann", authorRole: .customer, text: text)
    }

    func texts(_ store: FileStore, _ ticket: Int) async throws -> [String] {
        try await store.entries(of: TicketID(ticket), in: acme, after: nil, before: nil, limit: 1000, includeNotes: true).map(\.text)
    }

    @Test func concurrentWritesShareCommitsAndEachIsNumberedOnce() async throws {
        let (store, _) = try await seeded(tickets: 20)
        let before = store.writeStatistics()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for ticket in 1001...1020 {
                for n in 1...10 {
                    group.addTask { _ = try await store.appendEntry(message("\(ticket)-\(n)"), to: TicketID(ticket), in: acme, at: Date()) { _ in } }
                }
            }
            try await group.waitForAll()
        }
        for ticket in 1001...1020 {
            let entries = try await store.entries(of: TicketID(ticket), in: acme, after: nil, before: nil, limit: 100, includeNotes: true)
            #expect(entries.map(\.seq) == Array(1...10))
            #expect(Set(entries.map(\.text)) == Set((1...10).map { "\(ticket)-\($0)" }))
        }
        let after = store.writeStatistics()
        #expect(after.writes - before.writes == 200)
        // 200 writes arrived at once: they shared rounds of fsyncs.
        #expect(after.commits - before.commits < 100, "\(after.commits - before.commits) commits for 200 writes")
    }

    @Test(.timeLimit(.minutes(1))) func aBusyWriterWaitsForTheGroupCommitIntervalOrEnoughJobs() async throws {
        // An interval longer than the test may take: only enough waiting jobs can end the wait in time.
        // (Were it ignored, the test would exceed its time limit and fail, not hang.)
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let (store, _) = try await seeded(tickets: 4, threadPool: pool, groupCommitInterval: .seconds(120))
        let writer = store.writer(acme)
        let release = await writer.hold()
        let first = Task { try await store.appendEntry(message("first"), to: TicketID(1001), in: acme, at: Date()) { _ in } }
        while writer.queuedJobs < 1 { try await Task.sleep(for: .milliseconds(1)) }
        let commits = store.writeStatistics().commits
        // The held batch ends with a write waiting: the writer is busy, so it waits before its
        // next batch instead of committing "first" alone ...
        release()
        try await Task.sleep(for: .milliseconds(100))
        #expect(writer.queuedJobs == 1)
        // ... until enough jobs wait (as many as one session pipelines); then it commits them at once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 1..<TenantWriter.enoughToStart {
                group.addTask {
                    _ = try await store.appendEntry(message("\(n)"), to: TicketID(1002 + n % 3), in: acme, at: Date()) { _ in }
                }
            }
            try await group.waitForAll()
        }
        _ = try await first.value
        #expect(store.writeStatistics().commits - commits == 1) // one batch for all of them
        #expect(try await texts(store, 1001) == ["first"])
        #expect(try await texts(store, 1002).count + texts(store, 1003).count + texts(store, 1004).count == TenantWriter.enoughToStart - 1)
        try await pool.shutdownGracefully()
    }

    @Test(.timeLimit(.minutes(1))) func aBusyWriterWithFewJobsCommitsThemOnceTheIntervalIsOver() async throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let (store, _) = try await seeded(threadPool: pool, groupCommitInterval: .seconds(2))
        let writer = store.writer(acme)
        let release = await writer.hold()
        let waiting = Task { try await store.appendEntry(message("waited"), to: TicketID(1001), in: acme, at: Date()) { _ in } }
        while writer.queuedJobs < 1 { try await Task.sleep(for: .milliseconds(1)) }
        release()
        // Still waiting for the interval (the held batch started it) ...
        try await Task.sleep(for: .milliseconds(50))
        #expect(writer.queuedJobs == 1)
        // ... and committed once it is over, without any further write coming.
        _ = try await waiting.value
        #expect(try await texts(store, 1001) == ["waited"])
        // Then the writer is idle again: the next write does not wait.
        _ = try await store.appendEntry(message("next"), to: TicketID(1002), in: acme, at: Date()) { _ in }
        try await pool.shutdownGracefully()
    }

    @Test(.timeLimit(.minutes(1))) func aBusyWriterWaitingForItsIntervalLeavesTheThreadToReadersAndOtherTenants() async throws {
        // One store thread, and a busy writer that waits 120 s (or for 64 jobs) between batches.
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let (store, _) = try await seeded(threadPool: pool, groupCommitInterval: .seconds(120))
        let gus = try await store.createCustomer(NewCustomer(name: "Gus", email: "gus@x.test", phone: nil), in: globex, at: Date())
        let writer = store.writer(acme)
        let release = await writer.hold()
        let first = (1...10).map { n in
            Task { try await store.appendEntry(message("\(n)"), to: TicketID(1001), in: acme, at: Date()) { _ in } }
        }
        while writer.queuedJobs < 10 { try await Task.sleep(for: .milliseconds(1)) }
        release()
        // Its ten jobs wait for the interval, and the one thread serves a read of the same tenant
        // and another tenant's write meanwhile (a waiting writer that held the thread would
        // keep them waiting for 120 s, past the time limit).
        #expect(try await store.ticket(TicketID(1001), in: acme)?.lastSeq == 0)
        _ = try await store.openTicket(customer: gus.id, subject: "meanwhile", in: globex, at: Date())
        #expect(writer.queuedJobs == 10)
        // 64 waiting jobs start the batch early.
        let more = (11...64).map { n in
            Task { try await store.appendEntry(message("\(n)"), to: TicketID(1001), in: acme, at: Date()) { _ in } }
        }
        for task in first + more { _ = try await task.value }
        #expect(try await texts(store, 1001).count == 64)
        try await pool.shutdownGracefully()
    }

    @Test func logsKeptOpenBetweenBatchesStayWithinTheStoresBudget() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let budget = OpenLogBudget(limit: 3)
        let a = OpenLogFiles(budget: budget), b = OpenLogFiles(budget: budget)
        func file(_ name: String) -> OpenLogFiles.File {
            OpenLogFiles.File(fd: open(root + "/" + name, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), length: 0)
        }
        a.keep("a1", file("a1"))
        a.keep("a2", file("a2"))
        b.keep("b1", file("b1"))
        b.keep("b2", file("b2")) // over the budget: closed, not kept
        #expect((a.count, b.count, budget.inUse) == (2, 1, 3))
        let taken = try #require(a.take("a1")) // handed to a batch: no longer counted
        close(taken.fd)
        #expect(budget.inUse == 2)
        b.keep("b2", file("b2"))
        #expect((b.count, budget.inUse) == (2, 3))
        a.closeAll()
        b.closeAll()
        #expect(budget.inUse == 0)
        // A log no batch wrote for `capacity` batches is closed; one kept again stays.
        a.keep("quiet", file("quiet"))
        a.keep("busy", file("busy"))
        for _ in 1...(2 * OpenLogFiles.capacity) {
            let busy = try #require(a.take("busy"))
            a.keep("busy", busy)
            a.batchEnded()
        }
        #expect((a.count, budget.inUse) == (1, 1))
        #expect(a.take("quiet") == nil)
        let busy = try #require(a.take("busy"))
        close(busy.fd)
    }

    @Test(.timeLimit(.minutes(1))) func anIdleWriterStartsAtOnceWhateverTheGroupCommitInterval() async throws {
        let (store, _) = try await seeded(groupCommitInterval: .seconds(120))
        // One write at a time: each finds the writer idle, even though it comes right after the
        // previous one was acknowledged, so none waits for the interval (or the test would
        // exceed its time limit).
        for n in 1...3 {
            _ = try await store.appendEntry(message("\(n)"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        }
        #expect(try await texts(store, 1001) == ["1", "2", "3"])
    }

    @Test func aFailedCommitUndoesItsWholeBatchAndNothingElse() async throws {
        // The writer is held below with a blocking job: on a pool of its own (see the next test).
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let (store, customer) = try await seeded(threadPool: pool)
        _ = try await store.appendEntry(message("one"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        _ = try await store.appendEntry(message("two"), to: TicketID(1002), in: acme, at: Date()) { _ in }
        // Hold the writer so that the next two writes land in one batch, then fail that batch's
        // fsync of #1002's log.
        let release = await store.writer(acme).hold()
        store.faults.failNext(.sync, pathSuffix: "/tickets/1002.jsonl", errno: EIO)
        let first = Task { try await store.appendEntry(message("lost 1"), to: TicketID(1001), in: acme, at: Date()) { _ in } }
        let second = Task { try await store.appendEntry(message("lost 2"), to: TicketID(1002), in: acme, at: Date()) { _ in } }
        while store.writer(acme).queuedJobs < 2 { try await Task.sleep(for: .milliseconds(1)) }
        release()
        let refusal = DesklineError.storage("the store could not complete the operation; nothing was changed")
        await #expect(throws: refusal) { try await first.value }
        await #expect(throws: refusal) { try await second.value }
        // Both were undone, on disk too; the next writes take the numbers they would have had.
        #expect(try await texts(store, 1001) == ["one"])
        #expect(try await texts(store, 1002) == ["two"])
        #expect(try String(contentsOfFile: root + "/tenants/acme/tickets/1001.jsonl", encoding: .utf8).split(separator: "\n").count == 2)
        let (_, entry) = try #require(try await store.appendEntry(message("three"), to: TicketID(1001), in: acme, at: Date()) { _ in })
        #expect(entry?.seq == 2)

        // A ticket whose index line cannot be written is not created at all.
        store.faults.failNext(.write, pathSuffix: "/customer-tickets/\(customer.rawValue).jsonl")
        await #expect(throws: refusal) { try await store.openTicket(customer: customer, subject: "lost", in: acme, at: Date()) }
        #expect(!FileManager.default.fileExists(atPath: root + "/tenants/acme/tickets/1003.jsonl"))
        #expect(try await store.openTicket(customer: customer, subject: "kept", in: acme, at: Date()).id == TicketID(1003))
        #expect(try await store.check(repair: false).problems == [])
        try await pool.shutdownGracefully()
    }

    /// A message `text` whose change tells `users` (and, with `login`, names the customer's login).
    func told(_ text: String, _ users: [UserID], login: Bool = false) -> TicketDecision {
        let (draft, acme) = (message(text), acme)
        return { state throws(DesklineError) -> Change in
            var ticket = state.ticket
            let entry = ticket.append(draft, at: Timestamp.truncate(Date()))
            let event = TicketEvent(kind: .entry, tenantId: acme, ticket: ticket, entry: entry,
                                    actor: Actor(id: draft.authorId, name: draft.authorName, role: draft.authorRole), at: entry.at,
                                    recipients: users, customerUserId: login ? try state.customerLogin() : nil)
            return Change(ticket: ticket, entry: entry, inbox: InboxDelivery(event), event: event)
        }
    }

    @Test func anEntryItsNotificationsAndItsEventAreOneCommitAndFailTogether() async throws {
        let (store, _) = try await seeded()
        let (amy, abe) = (UserID(rawValue: "u7")!, UserID(rawValue: "u8")!)
        let before = store.writeStatistics()
        let lastEvent = try await store.lastEventSeq(in: acme)
        let stored = try await store.changeTicket(TicketID(1001), in: acme, told("hello", [amy, abe], login: true))
        #expect(stored?.event?.recipients == [amy, abe])
        #expect(stored?.event?.customerUserId == nil) // customer c1 has no login
        #expect(stored?.event?.seq == lastEvent + 1)
        #expect(store.writeStatistics().commits - before.commits == 1)
        for user in [amy, abe] { #expect(try await store.inbox(of: user, in: acme).items.map(\.text) == ["hello"]) }
        #expect(try await store.events(in: acme, after: lastEvent, limit: 10) == [try #require(stored?.event)])

        // A decision that refuses takes the entry with it: nothing of the change is stored.
        await #expect(throws: DesklineError.self) {
            try await store.changeTicket(TicketID(1001), in: acme) { _ throws(DesklineError) -> Change in throw .conflict("refused") }
        }
        #expect(try await texts(store, 1001) == ["hello"])
        #expect(try await store.inbox(of: amy, in: acme).items.count == 1)
        #expect(try await store.lastEventSeq(in: acme) == lastEvent + 1)
    }

    @Test func aDamagedInboxIsLeftOutAndTheChangeIsStored() async throws {
        let (store, _) = try await seeded()
        let (amy, abe) = (UserID(rawValue: "u7")!, UserID(rawValue: "u8")!)
        try FileManager.default.createDirectory(atPath: root + "/tenants/acme/inbox", withIntermediateDirectories: true)
        let damaged = root + "/tenants/acme/inbox/u8.jsonl"
        try Data("{\"id\": damaged}\n".utf8).write(to: URL(fileURLWithPath: damaged))
        let stored = try await store.changeTicket(TicketID(1001), in: acme, told("hello", [amy, abe]))
        #expect(stored?.entry?.text == "hello")
        #expect(try await texts(store, 1001) == ["hello"])
        #expect(try await store.inbox(of: amy, in: acme).items.map(\.text) == ["hello"])
        #expect(try String(contentsOfFile: damaged, encoding: .utf8) == "{\"id\": damaged}\n")
    }

    @Test func aRefusedDecisionRefusesOnlyItsOwnChangeInABatch() async throws {
        // The writer is held below with a blocking job: on a pool of its own, so that tests
        // running meanwhile (and the other test that holds a writer) keep the shared pool's
        // threads.
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let (store, _) = try await seeded(threadPool: pool)
        let amy = UserID(rawValue: "u7")!
        let lastEvent = try await store.lastEventSeq(in: acme)
        let release = await store.writer(acme).hold()
        let refused = Task {
            try await store.changeTicket(TicketID(1001), in: acme) { _ throws(DesklineError) -> Change in throw .conflict("refused") }
        }
        let kept = Task { try await store.changeTicket(TicketID(1002), in: acme, told("kept", [amy])) }
        while store.writer(acme).queuedJobs < 2 { try await Task.sleep(for: .milliseconds(1)) }
        let commits = store.writeStatistics().commits
        release()
        await #expect(throws: DesklineError.self) { try await refused.value }
        #expect(try await kept.value?.entry?.text == "kept")
        #expect(store.writeStatistics().commits - commits == 1) // both were in one batch
        #expect(try await texts(store, 1001) == [])
        #expect(try await texts(store, 1002) == ["kept"])
        #expect(try await store.inbox(of: amy, in: acme).items.map(\.text) == ["kept"])
        // The refused change took no event number.
        #expect(try await store.events(in: acme, after: lastEvent, limit: 10).map(\.seq) == [lastEvent + 1])
        try await pool.shutdownGracefully()
    }

    @Test func readersNeverSeeALineBeforeItIsDurable() async throws {
        let (store, _) = try await seeded()
        var ticket = try #require(try await store.ticket(TicketID(1001), in: acme))
        ticket.lastSeq = 1
        let entry = TicketEntry(seq: 1, kind: .message, authorId: author, authorName: "Ann", authorRole: .customer, text: "in flight", at: Date())
        let batch = WriteBatch(visibility: store.visibility) { _, _ in }
        try batch.append(FileStore.line(TicketLogLine(ticket: ticket, entry: entry)), to: store.ticketLog(TicketID(1001), acme))
        try batch.append(FileStore.line(TicketRef(ticket: TicketID(1001))), to: store.customerTicketsFile(CustomerID(rawValue: "c9")!, acme))
        // Written but not yet fsync'd: nobody sees it.
        #expect(try await texts(store, 1001) == [])
        #expect(try await store.ticket(TicketID(1001), in: acme)?.lastSeq == 0)
        #expect(try await store.ticketIDs(ofCustomer: CustomerID(rawValue: "c9")!, in: acme) == [])
        try batch.commit(to: Journal(tenantDir: root + "/tenants/acme"))
        batch.end()
        #expect(try await texts(store, 1001) == ["in flight"])
        #expect(try await store.ticket(TicketID(1001), in: acme)?.lastSeq == 1)
    }

    @Test func aBusyWriterKeepsItsLogsOpenBetweenBatchesAndAFailedBatchStillUndoesOnlyItself() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root + "/log.jsonl"
        let journal = Journal(tenantDir: root)
        let visibility = LogVisibility(), faults = FaultInjection()
        let kept = OpenLogFiles()
        func batch() -> WriteBatch { WriteBatch(visibility: visibility, faults: faults, keptOpen: kept) { _, _ in } }
        func content() throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

        let first = batch()
        try first.append(Data("a\n".utf8), to: path)
        try first.commit(to: journal)
        first.end()
        #expect(kept.count == 1) // kept open for the next batch

        // The next batch appends through the kept file; its failed sync undoes only its own line
        // (the file is cut back, not removed: an earlier batch created it) and drops the file.
        let second = batch()
        try second.append(Data("b\n".utf8), to: path)
        #expect(kept.count == 0)
        #expect(visibility.limit(path) == 2) // readers still see only the committed line
        faults.failNext(.sync, pathSuffix: "/log.jsonl", errno: EIO)
        #expect(throws: (any Error).self) { try second.commit(to: journal) }
        second.rollback()
        second.end()
        #expect(kept.count == 0)
        #expect(try content() == "a\n")

        // Opened afresh, it appends after the committed line.
        let third = batch()
        try third.append(Data("c\n".utf8), to: path)
        try third.commit(to: journal)
        third.end()
        #expect(try content() == "a\nc\n")
        #expect(visibility.limit(path) == nil)
        kept.closeAll()
        #expect(kept.count == 0)
    }

    @Test func aReaderThatRacesARollbackMeasuresAgainAndNeverSeesTheUndoneLine() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root + "/log.jsonl"
        let journal = Journal(tenantDir: root)
        let visibility = LogVisibility(), faults = FaultInjection()
        let first = WriteBatch(visibility: visibility) { _, _ in }
        try first.append(Data("a\n".utf8), to: path)
        try first.commit(to: journal)
        first.end()
        let second = WriteBatch(visibility: visibility, faults: faults) { _, _ in }
        try second.append(Data("b\n".utf8), to: path)
        faults.failNext(.sync, pathSuffix: "/log.jsonl", errno: EIO)
        #expect(throws: (any Error).self) { try second.commit(to: journal) }
        // A reader measures the file with the undone line still in it; then the batch is rolled
        // back and its registration withdrawn, before the reader looks at it.
        var measured: [Int64] = []
        let visible = visibility.visibleLength(path) {
            let size = Int64((try? Data(contentsOf: URL(fileURLWithPath: path)).count) ?? -1)
            measured.append(size)
            if measured.count == 1 {
                #expect(second.rollback().isEmpty)
                second.end()
            }
            return size
        }
        #expect(measured == [4, 2]) // measured again after the rollback
        #expect(visible == 2)
    }

    @Test func aLogARollbackCouldNotCutStaysHiddenUntilALaterBatchCutsIt() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root + "/log.jsonl"
        let journal = Journal(tenantDir: root)
        let visibility = LogVisibility(), faults = FaultInjection()
        func batch() -> WriteBatch { WriteBatch(visibility: visibility, faults: faults) { _, _ in } }
        func content() throws -> String { try String(contentsOfFile: path, encoding: .utf8) }
        func visible() throws -> Int64 { try visibility.visibleLength(path) { Int64(try content().utf8.count) } }

        let first = batch()
        try first.append(Data("a\n".utf8), to: path)
        try first.commit(to: journal)
        first.end()

        // The commit fails, and so does the cut back: the undone line stays in the file, hidden.
        let second = batch()
        try second.append(Data("b\n".utf8), to: path)
        faults.failNext(.sync, pathSuffix: "/log.jsonl", errno: EIO)
        #expect(throws: (any Error).self) { try second.commit(to: journal) }
        faults.failNext(.cut, pathSuffix: "/log.jsonl", errno: EIO)
        #expect(second.rollback().map(\.path) == [path])
        second.end()
        #expect(try content() == "a\nb\n")
        #expect(try visible() == 2)
        #expect(visibility.pendingCut(path) == LogVisibility.PendingCut(length: 2, created: false))

        // The next batch to open it must cut it first; that fails too: nothing is appended.
        let third = batch()
        faults.failNext(.cut, pathSuffix: "/log.jsonl", errno: EIO)
        #expect(throws: (any Error).self) { try third.append(Data("c\n".utf8), to: path) }
        third.rollback()
        third.end()
        #expect(try content() == "a\nb\n")
        #expect(try visible() == 2)

        // Then it succeeds: the undone line is gone before the new one is appended.
        let fourth = batch()
        try fourth.append(Data("d\n".utf8), to: path)
        try fourth.commit(to: journal)
        fourth.end()
        #expect(try content() == "a\nd\n")
        #expect(visibility.pendingCut(path) == nil)
        #expect(try visible() == 4)
    }

    @Test func aJournalRecordThatCouldNotBeCutOffIsCutByTheNextCommit() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let journal = Journal(tenantDir: root), faults = FaultInjection()
        func entry(_ text: String) -> Journal.Entry {
            Journal.Entry(path: root + "/log.jsonl", offset: 0, bytes: Data(text.utf8), created: false)
        }
        func records() throws -> [String] {
            let data = try Data(contentsOf: URL(fileURLWithPath: root + "/journal"))
            return Journal.decode(data).records.map { String(decoding: $0[0].bytes, as: UTF8.self) }
        }
        try journal.commit([entry("a\n")], faults: faults)
        faults.failNext(.sync, pathSuffix: "/journal", errno: EIO)
        faults.failNext(.cut, pathSuffix: "/journal", errno: EIO)
        #expect(throws: (any Error).self) { try journal.commit([entry("b\n")], faults: faults) }
        #expect(try records() == ["a\n", "b\n"]) // still there: a replay now would bring it back
        try journal.commit([entry("c\n")], faults: faults)
        #expect(try records() == ["a\n", "c\n"])
    }

    @Test func aCutThatNeverSucceedsIsMadeByTheNextStartFromTheJournal() async throws {
        _ = try await seeded()
        // A server's store: it takes the lock before its first write.
        let store = try await FileStore(root: root)
        let lock = try await store.lockForServer(pid: 1)
        _ = try await store.appendEntry(message("kept"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        try store.writer(acme).checkpoint() // the journal is empty: "kept" is in its log, synced
        store.faults.failNext(.sync, pathSuffix: "/tickets/1001.jsonl", errno: EIO)
        store.faults.failNext(.cut, pathSuffix: "/tickets/1001.jsonl", errno: EIO)
        await #expect(throws: DesklineError.self) {
            _ = try await store.appendEntry(message("undone"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        }
        let log = store.ticketLog(TicketID(1001), acme)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("undone"))
        // The stop cannot empty the journal while the cut is pending: it says where to cut.
        #expect(await store.checkpointAll() == false)
        lock.release(clean: false)
        let restarted = try await FileStore(root: root)
        let again = try await restarted.lockForServer(pid: 2)
        #expect(try !String(contentsOfFile: log, encoding: .utf8).contains("undone"))
        #expect(try await texts(restarted, 1001) == ["kept"])
        again.release(clean: true)
    }

    @Test func aMessageWhoseBatchCouldNotBeUndoneOnDiskIsNeverShown() async throws {
        let (store, _) = try await seeded()
        _ = try await store.appendEntry(message("kept"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        store.faults.failNext(.sync, pathSuffix: "/tickets/1001.jsonl", errno: EIO)
        store.faults.failNext(.cut, pathSuffix: "/tickets/1001.jsonl", errno: EIO)
        await #expect(throws: DesklineError.self) {
            _ = try await store.appendEntry(message("undone"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        }
        let log = store.ticketLog(TicketID(1001), acme)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("undone")) // still on disk
        #expect(try await texts(store, 1001) == ["kept"])
        #expect(try await store.ticket(TicketID(1001), in: acme)?.lastSeq == 1)
        // The next message cuts it first and takes the number it would have had.
        let (_, entry) = try #require(try await store.appendEntry(message("next"), to: TicketID(1001), in: acme, at: Date()) { _ in })
        #expect(entry?.seq == 2)
        #expect(try await texts(store, 1001) == ["kept", "next"])
        #expect(try !String(contentsOfFile: log, encoding: .utf8).contains("undone"))
    }

    /// The logs of this test's store that this process has open, as "<descriptor> <path>" (the
    /// journal stays open by design). A leaked file that was removed meanwhile shows as "<path>
    /// (deleted)".
    func openLogs() throws -> [String] {
        // (The links name the real path: the root's symbolic links resolved.)
        let real = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        return fds.compactMap { fd -> String? in
            guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd),
                  path.hasPrefix(real), path.contains(".jsonl") else { return nil }
            return fd + " " + path
        }.sorted()
    }

    func writeConcurrently(_ store: FileStore, _ count: Int, tickets: Int = 5) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 1...count {
                group.addTask { _ = try await store.appendEntry(message("m\(n)"), to: TicketID(1001 + n % tickets), in: acme, at: Date()) { _ in } }
            }
            try await group.waitForAll()
        }
        while store.writer(acme).isBusy { try await Task.sleep(for: .milliseconds(1)) }
    }

    @Test func aWriterClosesItsLogsAWhileAfterItRanOutOfWork() async throws {
        let (store, _) = try await seeded(tickets: 5, idleLogsKept: .milliseconds(50))
        try await writeConcurrently(store, 50)
        #if os(Linux)
        let deadline = ContinuousClock.now + .seconds(20)
        while try !openLogs().isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try openLogs() == [])
        #endif
        for ticket in 1001...1005 { #expect(try await texts(store, ticket).count == 10) }
    }

    @Test func anIdleWritersLogsStayOpenForItsNextWrite() async throws {
        let (store, _) = try await seeded(tickets: 5, idleLogsKept: .seconds(600))
        try await writeConcurrently(store, 50)
        #if os(Linux)
        // Idle now: the logs it wrote are still open, and the next writes use the same
        // descriptors (none was closed and opened again).
        let kept = try openLogs()
        #expect(kept.contains { $0.hasSuffix("/tickets/1001.jsonl") })
        try await writeConcurrently(store, 50)
        #expect(try openLogs() == kept)
        #endif
        for ticket in 1001...1005 { #expect(try await texts(store, ticket).count == 20) }
    }

    @Test func writesRacingTheCloseOfIdleLogsAllLand() async throws {
        // Idle logs close 1 ms after the writer's last batch: four writers pausing 0-2 ms
        // between their writes keep meeting the close (the timer, the close on the pool and
        // their batches all take turns).
        let (store, _) = try await seeded(tickets: 4, idleLogsKept: .milliseconds(1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for round in 1...30 {
                        _ = try await store.appendEntry(message("w\(writer) r\(round)"), to: TicketID(1001 + writer), in: acme, at: Date()) { _ in }
                        try await Task.sleep(for: .microseconds((writer * 7 + round * 13) % 2_000))
                    }
                }
            }
            try await group.waitForAll()
        }
        for writer in 0..<4 {
            #expect(try await texts(store, 1001 + writer) == (1...30).map { "w\(writer) r\($0)" })
        }
    }

    @Test func aFullSetOfKeptLogsMakesRoomByClosingTheOneKeptLongestAgo() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let kept = OpenLogFiles()
        func file(_ name: String) -> OpenLogFiles.File {
            OpenLogFiles.File(fd: open(root + "/" + name, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), length: 0)
        }
        for n in 0..<OpenLogFiles.capacity {
            kept.keep("f\(n)", file("f\(n)"))
            kept.batchEnded()
        }
        kept.keep("new", file("new"))
        #expect(kept.count == OpenLogFiles.capacity)
        #expect(kept.take("f0") == nil)
        let new = try #require(kept.take("new"))
        close(new.fd)
        kept.closeAll()
    }

    @Test func aDirectoryInTheEarlierLayoutIsRefusedNotMisread() async throws {
        let (store, _) = try await seeded()
        #expect(FileManager.default.createFile(atPath: root + "/tenants/acme/tickets/counters.json", contents: Data(#"{"ticket": 1002, "call": 0}"#.utf8)))
        await #expect(throws: DesklineError.self) { try await store.lockForServer(pid: 1) }
        // The refusal released the lock: once the directory is fixed, a server may start.
        try FileManager.default.removeItem(atPath: root + "/tenants/acme/tickets/counters.json")
        try await store.lockForServer(pid: 1).release(clean: true)
    }

    @Test func repairNeverRemovesALogItCannotParse() async throws {
        let (store, _) = try await seeded()
        let path = root + "/tenants/acme/tickets/1001.jsonl"
        try Data("{\"ticket\": damaged}\n".utf8).write(to: URL(fileURLWithPath: path))
        let report = try await store.check(repair: true)
        #expect(!report.problems.isEmpty)
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func aDirectoryNoServerEverHeldNeedsNoRecovery() async throws {
        // What `deskline tenant add` / `customer add` / `user add` leave: accounts, and a server
        // lock file the CLI's "is a server running?" probe created empty.
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        _ = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        #expect(await !store.isServerRunning())
        let first = try await FileStore(root: root)
        let lock = try await first.lockForServer(pid: 1)
        #expect(!first.recoveryNeeded)
        lock.release(clean: false) // as after kill -9: now a server did run here
        let second = try await FileStore(root: root)
        try await second.lockForServer(pid: 2).release(clean: true)
        #expect(second.recoveryNeeded)
    }

    @Test func recoveryAfterAnUncleanStopIsPerTenantAndLazy() async throws {
        let (store, _) = try await seeded()
        _ = try await store.appendEntry(message("kept"), to: TicketID(1001), in: acme, at: Date()) { _ in }
        let server = try await store.lockForServer(pid: 1)
        server.release(clean: false)  // as after kill -9

        // What a crash can leave: a torn line, a ticket logged but not yet indexed, a log whose
        // first line never made it, a temp file of an interrupted replace.
        let t = root + "/tenants/acme"
        let log = try #require(FileHandle(forWritingAtPath: t + "/tickets/1001.jsonl"))
        log.seekToEndOfFile()
        log.write(Data(#"{"entry":{"seq":2,"te"#.utf8))
        try log.close()
        try Data((try String(contentsOfFile: t + "/customer-tickets/c1.jsonl", encoding: .utf8)).split(separator: "\n")[0].utf8 + [0x0A])
            .write(to: URL(fileURLWithPath: t + "/customer-tickets/c1.jsonl"))
        try Data().write(to: URL(fileURLWithPath: t + "/tickets/1003.jsonl"))
        let stray = t + "/users/" + DurableFile.tempPrefix + "u9.json-x"
        #expect(FileManager.default.createFile(atPath: stray, contents: Data("{".utf8)))
        #expect(try await store.check(repair: false).problems.count == 4)

        let restarted = try await FileStore(root: root)
        let lock = try await restarted.lockForServer(pid: 2)
        #expect(restarted.recoveryNeeded)
        // Starting reads nothing: the damage is still there ...
        #expect(FileManager.default.fileExists(atPath: stray))
        // ... and readers skip it meanwhile.
        #expect(try await restarted.entries(of: TicketID(1001), in: acme, after: nil, before: nil, limit: 10, includeNotes: true).map(\.text) == ["kept"])
        // Another tenant's first write recovers only that tenant.
        let gus = try await restarted.createCustomer(NewCustomer(name: "Gus", email: "gus@x.test", phone: nil), in: globex, at: Date())
        _ = try await restarted.openTicket(customer: gus.id, subject: "g", in: globex, at: Date())
        #expect(FileManager.default.fileExists(atPath: stray))
        // The tenant's first write recovers it, before the write.
        let (_, entry) = try #require(try await restarted.appendEntry(message("after"), to: TicketID(1001), in: acme, at: Date()) { _ in })
        #expect(entry?.seq == 2)
        #expect(!FileManager.default.fileExists(atPath: stray))
        #expect(!FileManager.default.fileExists(atPath: t + "/tickets/1003.jsonl"))
        #expect(try await restarted.ticketIDs(ofCustomer: CustomerID(rawValue: "c1")!, in: acme) == [TicketID(1001), TicketID(1002)])
        #expect(try await restarted.check(repair: false).problems == [])

        // A clean stop lets the next start skip recovery.
        #expect(await restarted.waitUntilWritesFinish())
        lock.release(clean: true)
        let again = try await FileStore(root: root)
        let third = try await again.lockForServer(pid: 3)
        #expect(!again.recoveryNeeded)
        third.release(clean: true)
    }
}

/// The tenant journal: one sync per batch, and what brings acknowledged lines back.
struct JournalTests {
    let root = NSTemporaryDirectory() + "deskline-journal-" + UUID().uuidString
    let acme = TenantID(rawValue: "acme")!

    func seeded() async throws -> FileStore {
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        _ = try await store.openTicket(customer: c.id, subject: "s", in: acme, at: Date())
        return store
    }

    func post(_ store: FileStore, _ text: String) async throws {
        let draft = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann", authorRole: .customer, text: text)
        _ = try await store.appendEntry(draft, to: TicketID(1001), in: acme, at: Date()) { _ in }
    }

    func texts(_ store: FileStore) async throws -> [String] {
        try await store.entries(of: TicketID(1001), in: acme, after: nil, before: nil, limit: 100, includeNotes: true).map(\.text)
    }

    @Test func theJournalBringsBackAcknowledgedLinesALogLost() async throws {
        let store = try await seeded()
        let log = root + "/tenants/acme/tickets/1001.jsonl"
        let journal = root + "/tenants/acme/journal"
        let before = try Data(contentsOf: URL(fileURLWithPath: log))
        for n in 1...5 { try await post(store, "m\(n)") }
        // A power loss: the log's unsynced pages are gone (its new lines were synced only in the
        // journal), a batch that never reached the journal left a line, and the journal ends in
        // a record that was being written.
        try (before + Data(#"{"never":"acknowledged"}"#.utf8 + [0x0A])).write(to: URL(fileURLWithPath: log))
        let handle = try #require(FileHandle(forWritingAtPath: journal))
        handle.seekToEndOfFile()
        handle.write(Data("DLJ1 1 999 abc\ntickets/1001.jsonl\n0 5\nxx".utf8))
        try handle.close()
        let restarted = try await FileStore(root: root)
        #expect(try await restarted.check(repair: false).problems.contains { $0.contains("/journal:") })
        #expect(try await restarted.check(repair: false, live: true).problems.allSatisfy { !$0.contains("/journal:") })
        try await restarted.lockForServer(pid: 2).release(clean: true)
        #expect(try await texts(restarted) == (1...5).map { "m\($0)" })
        #expect(try Data(contentsOf: URL(fileURLWithPath: journal)).isEmpty)
        #expect(try await restarted.check(repair: false).problems == [])
        try await post(restarted, "m6")
        #expect(try await texts(restarted).last == "m6")
    }

    @Test func aCheckpointSyncsTheLogsAndEmptiesTheJournal() async throws {
        let store = try await seeded()
        let journal = root + "/tenants/acme/journal"
        try await post(store, "one")
        #expect(try Data(contentsOf: URL(fileURLWithPath: journal)).count > 0)
        #expect(await store.checkpointAll())
        #expect(try Data(contentsOf: URL(fileURLWithPath: journal)).isEmpty)
        try await post(store, "two")
        #expect(try await texts(store) == ["one", "two"])
        #expect(try Journal.decode(Data(contentsOf: URL(fileURLWithPath: journal))).records.count == 1)
    }

    @Test func recordsRoundTripAndDamageEndsTheReplay() throws {
        let a = Journal.encode([("tickets/1.jsonl", 0, Data("a\n".utf8)), ("inbox/u1.jsonl", 7, Data("bb\n".utf8))])
        // The format journals on disk have (checksum: FNV-1a of the body, worked out by Python).
        #expect(String(decoding: a, as: UTF8.self) == "DLJ1 2 44 99c56a029276a2e2\ntickets/1.jsonl\n0 2\na\ninbox/u1.jsonl\n7 3\nbb\n")
        let b = Journal.encode([("tickets/1.jsonl", 2, Data("c\n".utf8))])
        let both = Journal.decode(a + b)
        #expect(both.records.count == 2)
        #expect(both.records[0].map(\.path) == ["tickets/1.jsonl", "inbox/u1.jsonl"])
        #expect(both.records[0].map(\.offset) == [0, 7])
        #expect(both.records[1].map(\.bytes) == [Data("c\n".utf8)])
        #expect(both.validBytes == a.count + b.count)
        // A torn last record, a flipped byte, and a path out of the tenant each end it.
        #expect(Journal.decode(a + b.dropLast()).records.count == 1)
        var flipped = b
        flipped[flipped.count - 2] ^= 0x01
        #expect(Journal.decode(a + flipped).records.count == 1)
        #expect(Journal.decode(Journal.encode([("../other/tickets/1.jsonl", 0, Data("x\n".utf8))]) + a).records.isEmpty)
    }
}

/// Reading logs from the newest end.
struct BackwardReadingTests {
    let root = NSTemporaryDirectory() + "deskline-backward-" + UUID().uuidString

    @Test func linesOfEverySizeComeBackNewestFirst() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root + "/log.jsonl"
        // Lines shorter and much longer than a read chunk, and a torn tail.
        let lines = (0..<120).map { i in String(repeating: Character(UnicodeScalar(97 + i % 26)!), count: [1, 700, 16_383, 16_384, 40_000][i % 5]) }
        try Data((lines.joined(separator: "\n") + "\n" + "torn").utf8).write(to: URL(fileURLWithPath: path))
        var seen: [String] = []
        try DurableFile.forEachLineBackward(path) { seen.append(String(decoding: $0, as: UTF8.self)); return true }
        #expect(seen == lines.reversed())
        #expect(try DurableFile.lastLine(path).map { String(decoding: $0, as: UTF8.self) } == lines.last)
        // Stopping early, and a visible length that hides the newest lines.
        var first: [String] = []
        try DurableFile.forEachLineBackward(path) { first.append(String(decoding: $0, as: UTF8.self)); return first.count < 3 }
        #expect(first == Array(lines.reversed().prefix(3)))
        let visible = Int64(lines.prefix(10).reduce(0) { $0 + $1.utf8.count + 1 })
        #expect(try DurableFile.lastLine(path, visibleLength: { min(try $0(), visible) }).map { String(decoding: $0, as: UTF8.self) } == lines[9])
        #expect(try DurableFile.lastLine(root + "/missing.jsonl") == nil)
    }

    @Test func historyPagesMatchTheWholeLog() async throws {
        let store = try await FileStore(root: root)
        let acme = TenantID(rawValue: "acme")!
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        let t = try await store.openTicket(customer: c.id, subject: "s", in: acme, at: Date()).id
        for i in 1...60 {
            let kind: TicketEntry.Kind = i % 4 == 0 ? .note : .message
            let draft = TicketEntryDraft(kind: kind, authorId: UserID(rawValue: "u1")!, authorName: "A", authorRole: .agent,
                                         text: String(repeating: "x", count: i * 500))
            _ = try await store.appendEntry(draft, to: t, in: acme, at: Date()) { _ in }
        }
        let all = try store.readLines(TicketLogLine.self, store.ticketLog(t, acme)).compactMap(\.entry)
        for includeNotes in [true, false] {
            let visible = all.filter { includeNotes || $0.isVisibleToCustomer }
            for limit in [1, 7, 100] {
                #expect(try await store.entries(of: t, in: acme, after: nil, before: nil, limit: limit, includeNotes: includeNotes).map(\.position)
                        == visible.suffix(limit).map(\.position))
                for pivot in [EntryPosition(0), EntryPosition(10), EntryPosition(12, note: 1), EntryPosition(45), EntryPosition(99)] {
                    #expect(try await store.entries(of: t, in: acme, after: pivot, before: nil, limit: limit, includeNotes: includeNotes).map(\.position)
                            == visible.filter { $0.position > pivot }.prefix(limit).map(\.position))
                    #expect(try await store.entries(of: t, in: acme, after: nil, before: pivot, limit: limit, includeNotes: includeNotes).map(\.position)
                            == visible.filter { $0.position < pivot }.suffix(limit).map(\.position))
                }
            }
        }
    }
}
