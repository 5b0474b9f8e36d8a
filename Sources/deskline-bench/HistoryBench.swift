import ArgumentParser
import DesklineCore
import DesklineStore
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// One long ticket, read the way HISTORY pages through it: what a page costs at each depth (time,
/// bytes read from the log) and what paging the whole ticket costs, alone and by several readers
/// at once (time, the process's RSS). In-process, through the file store's public API.
struct HistoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "HISTORY paging of one long ticket: a page at each depth, the whole ticket, time, bytes read and RSS."
    )

    @Option(help: "Entries in the ticket (messages and notes).") var entries = 100_000
    @Option(help: "Every n-th entry is a staff note (0: none).") var notesEvery = 10
    @Option(help: "A change without an entry (an assignment) after every n-th entry (0: none).") var changesEvery = 50
    @Option(help: "Entries per page (HISTORY's default is 20).") var limit = TicketService.defaultHistoryLimit
    @Option(help: "Reads per single-page measurement.") var repeats = 50
    @Option(help: "Readers that page through the whole ticket at once.") var readers = 5
    @Flag(help: "Skip paging the whole ticket (quadratic with a reader that scans the log's tail).") var skipWholeTicket = false
    @Flag(help: "Then page through the whole ticket with HISTORY over a `deskline serve` on the store, `readers` sessions at once.") var server = false
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "Directory for the store (default: a new one under /tmp, removed afterwards).") var directory: String?
    @Option(help: "Where to write the results as JSON.") var json = "bench-history.json"

    func run() async throws {
        let work = directory ?? NSTemporaryDirectory() + "deskline-bench-history-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: work) } }
        say("Machine: \(machineDescription()); store in \(work)")

        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        let store = try await FileStore(root: work + "/data", threadPool: pool)
        let tenant = TenantID(rawValue: "acme")!
        try await store.createTenant(Tenant(id: tenant, name: "Bench", createdAt: Date()))
        let customer = try await store.createCustomer(NewCustomer(name: "Customer", email: "customer@acme.bench", phone: nil), in: tenant, at: Date())
        let ticket = try await store.openTicket(customer: customer.id, subject: "A long ticket", in: tenant, at: Date()).id
        let hash = try PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)).hash(StoreBench.password)
        _ = try await store.createUser(NewUser(email: "agent@acme.bench", displayName: "Agent", role: .agent, passwordHash: hash, customerId: nil),
                                       in: tenant, at: Date())

        var clock = now()
        try await fill(store, tenant, ticket)
        guard let last = try await store.ticket(ticket, in: tenant) else { throw BenchError("the ticket is gone") }
        let bytes = (try? FileManager.default.attributesOfItem(atPath: work + "/data/tenants/acme/tickets/\(ticket.number).jsonl"))?[.size] as? Int ?? 0
        say("Filled \(entries) entries (\(last.lastSeq) messages, \(last.noteCount ?? 0) notes), \(bytes / 1_048_576) MiB, in \(format(now() - clock)) s")

        var rows: [(String, String)] = [
            ("machine", machineDescription()),
            ("ticket", "\(entries) entries (\(last.lastSeq) messages, \(last.noteCount ?? 0) notes, a change without an entry after every \(changesEvery)th), \(bytes / 1_048_576) MiB"),
        ]
        var results: [String: Any] = ["machine": machineDescription(), "entries": entries, "bytes": bytes, "limit": limit]

        // Single pages at several depths: the median and p99 of `repeats` reads, and the bytes
        // each read took from the file system.
        let middle = EntryPosition(last.lastSeq / 2)
        let cases: [(String, String, EntryPosition?, EntryPosition?, Bool)] = [
            ("latest", "latest page", nil, nil, true),
            ("beforeMiddle", "before \(middle) (the middle)", nil, middle, true),
            ("beforeMiddleCustomer", "before \(middle), customer (no notes)", nil, middle, false),
            ("beforeStart", "before 200 (near the start)", nil, EntryPosition(200), true),
            ("afterOld", "after 1 (an old entry)", EntryPosition(1), nil, true),
        ]
        for (key, name, after, before, includeNotes) in cases {
            var latency = Histogram()
            let readBefore = bytesRead()
            for _ in 0..<repeats {
                let t = now()
                let page = try await store.entries(of: ticket, in: tenant, after: after, before: before, limit: limit, includeNotes: includeNotes)
                latency.record(seconds: now() - t)
                guard page.count == limit else { throw BenchError("\(name): \(page.count) entries, expected \(limit)") }
            }
            let perPage = (bytesRead() - readBefore) / repeats
            rows.append(("page: \(name)", "p50 \(format(latency.ms(0.5), 2)) ms, p99 \(format(latency.ms(0.99), 2)) ms, \(kib(perPage)) read"))
            results[key] = ["p50ms": latency.ms(0.5), "p99ms": latency.ms(0.99), "bytesRead": perPage]
        }

        if !skipWholeTicket {
            // One reader pages from the newest end to the first entry, then `readers` do at once.
            resetPeakRSS()
            let rssBefore = residentKiB(of: getpid())
            clock = now()
            var readBefore = bytesRead()
            let alone = try await pageThrough(store, tenant, ticket)
            let aloneSeconds = now() - clock
            let aloneRead = bytesRead() - readBefore
            let rssAlone = residentKiB(of: getpid())
            rows.append(("whole ticket, 1 reader", "\(alone.pages) pages in \(format(aloneSeconds, 2)) s (p50 \(format(alone.latency.ms(0.5), 2)) ms, p99 \(format(alone.latency.ms(0.99), 2)) ms per page), \(kib(aloneRead / max(1, alone.pages))) read per page"))
            clock = now()
            readBefore = bytesRead()
            let together = try await atOnce { try await pageThrough(store, tenant, ticket) }
            let togetherSeconds = now() - clock
            let togetherRead = bytesRead() - readBefore
            let rssAfter = residentKiB(of: getpid()), peak = residentKiB(of: getpid(), "VmHWM")
            rows.append(("whole ticket, \(readers) readers at once", "\(format(togetherSeconds, 2)) s (p50 \(format(together.latency.ms(0.5), 2)) ms, p99 \(format(together.latency.ms(0.99), 2)) ms per page), \(kib(togetherRead / max(1, together.pages))) read per page"))
            rows.append(("RSS: before paging, after 1 reader, after \(readers), peak", mib([rssBefore, rssAlone, rssAfter, peak])))
            results["wholeTicket"] = ["pages": alone.pages, "seconds": aloneSeconds, "p50ms": alone.latency.ms(0.5), "p99ms": alone.latency.ms(0.99),
                                      "bytesRead": aloneRead]
            results["wholeTicketTogether"] = ["readers": readers, "seconds": togetherSeconds, "p50ms": together.latency.ms(0.5),
                                              "p99ms": together.latency.ms(0.99), "bytesRead": togetherRead]
            results["rssKiB"] = ["before": rssBefore ?? -1, "afterOne": rssAlone ?? -1, "afterAll": rssAfter ?? -1, "peak": peak ?? -1]
        }
        // Hand the directory over as a cleanly stopped server would.
        _ = await store.waitUntilWritesFinish()
        _ = await store.checkpointAll()
        try await store.lockForServer(pid: getpid()).release(clean: true)
        try await pool.shutdownGracefully()

        if server {
            let run = try await ServerRun.start(binary: desklineBinary(deskline), work: work)
            defer { try? run.stop() }
            let rssStart = run.rss()
            clock = now()
            let port = run.port
            let paged = try await atOnce { try await pageThrough(port: port, ticket) }
            let seconds = now() - clock
            let rssAfter = run.rss(), peak = residentKiB(of: run.process.processIdentifier, "VmHWM")
            rows.append(("HISTORY over the server, \(readers) sessions at once", "\(paged.pages) pages in \(format(seconds, 2)) s (p50 \(format(paged.latency.ms(0.5), 2)) ms, p99 \(format(paged.latency.ms(0.99), 2)) ms per page)"))
            rows.append(("server RSS: started, after paging, peak", mib([rssStart, rssAfter, peak])))
            results["server"] = ["sessions": readers, "pages": paged.pages, "seconds": seconds, "p50ms": paged.latency.ms(0.5), "p99ms": paged.latency.ms(0.99),
                                 "rssStartKiB": rssStart ?? -1, "rssAfterKiB": rssAfter ?? -1, "rssPeakKiB": peak ?? -1]
        }

        printTable("deskline-bench history (\(limit) entries per page)", rows)
        try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        say("\nResults written to \(json)")
    }

    /// Appends the ticket's entries with 64 concurrent writers (they share commits); every
    /// `notesEvery`-th is a note, and after every `changesEvery`-th comes a change without an entry.
    func fill(_ store: FileStore, _ tenant: TenantID, _ ticket: TicketID) async throws {
        let next = Counter()
        let entries = self.entries, notesEvery = self.notesEvery, changesEvery = self.changesEvery
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    while true {
                        let i = next.value.add(1, ordering: .relaxed).oldValue
                        guard i < entries else { return }
                        let note = notesEvery > 0 && i % notesEvery == notesEvery - 1
                        let draft = TicketEntryDraft(kind: note ? .note : .message, authorId: UserID(rawValue: note ? "u2" : "u1")!,
                                                     authorName: note ? "Agent" : "Customer", authorRole: note ? .agent : .customer,
                                                     text: "Entry \(i): the printer on the third floor still jams after the update.")
                        _ = try await store.appendEntry(draft, to: ticket, in: tenant, at: Date()) { _ in }
                        if changesEvery > 0, i % changesEvery == changesEvery - 1 {
                            _ = try await store.appendEntry(nil, to: ticket, in: tenant, at: Date()) { $0.assigneeName = "Agent \(i)" }
                        }
                        if i > 0, i % (entries / 10) == 0 { say("  ... \(i) of \(entries)") }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Pages from the newest end to the first entry, as a client following `HISTORY before`.
    func pageThrough(_ store: FileStore, _ tenant: TenantID, _ ticket: TicketID) async throws -> (pages: Int, latency: Histogram) {
        var before: EntryPosition?
        var pages = 0
        var latency = Histogram()
        var seen = 0
        while true {
            let t = now()
            let page = try await store.entries(of: ticket, in: tenant, after: nil, before: before, limit: limit, includeNotes: true)
            latency.record(seconds: now() - t)
            guard let first = page.first else { break }
            pages += 1
            seen += page.count
            before = first.position
        }
        guard seen == entries else { throw BenchError("paging found \(seen) entries, expected \(entries)") }
        return (pages, latency)
    }
}

extension HistoryBench {
    /// Runs `readers` page-throughs at once: their pages and latencies together.
    func atOnce(_ pageThrough: @escaping @Sendable () async throws -> (pages: Int, latency: Histogram)) async throws -> (pages: Int, latency: Histogram) {
        try await withThrowingTaskGroup(of: (pages: Int, latency: Histogram).self) { group in
            for _ in 0..<readers { group.addTask(operation: pageThrough) }
            var merged = (pages: 0, latency: Histogram())
            for try await one in group {
                merged.pages += one.pages
                merged.latency.merge(one.latency)
            }
            return merged
        }
    }

    /// Logs in as the agent and pages with HISTORY from the newest end to the first entry.
    func pageThrough(port: Int, _ ticket: TicketID) async throws -> (pages: Int, latency: Histogram) {
        let agent = try await LineConnection.connect(MultiThreadedEventLoopGroup.singleton, port: port)
        _ = try await agent.command("LOGIN agent@acme.bench \(StoreBench.password)")
        var before: String?
        var pages = 0, seen = 0
        var latency = Histogram()
        while true {
            let t = now()
            let reply = try await agent.reply("HISTORY \(ticket)" + (before.map { " before \($0) \(limit)" } ?? " \(limit)"))
            latency.record(seconds: now() - t)
            guard reply.last?.hasPrefix("OK ") == true else { throw BenchError("HISTORY: \(reply.last ?? "no reply")") }
            let ids = reply.filter { $0.hasPrefix("RPL ") }.map { String($0.split(separator: " ")[3]) }
            guard let first = ids.first else { break }
            pages += 1
            seen += ids.count
            before = first
        }
        await agent.close()
        guard seen == entries else { throw BenchError("HISTORY paged \(seen) entries, expected \(entries)") }
        return (pages, latency)
    }
}

/// Hands out numbers to concurrent tasks.
private final class Counter: Sendable {
    let value = Atomic(0)
}

/// Bytes this process has read through read(2) and its kind (`rchar` in /proc/self/io).
private func bytesRead() -> Int {
    guard let io = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return 0 }
    for line in io.split(separator: "\n") where line.hasPrefix("rchar:") {
        return Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) ?? 0
    }
    return 0
}

/// Starts a new peak for `VmHWM` (Linux: `5` into /proc/self/clear_refs).
private func resetPeakRSS() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

private func mib(_ kib: [Int?]) -> String { kib.map { $0.map { "\($0 / 1024) MiB" } ?? "?" }.joined(separator: ", ") }

private func kib(_ bytes: Int) -> String { bytes < 10 * 1024 ? "\(bytes) B" : "\(bytes / 1024) KiB" }
