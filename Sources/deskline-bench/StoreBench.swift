import ArgumentParser
import DesklineCore
import DesklinePostgres
import DesklineStore
import Foundation
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// Fills a store (the file store, or PostgreSQL with `--backend postgres`) with many tenants and
/// messages, then measures what must not grow with history: append throughput and latency,
/// server start time and memory, and read latency.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "A store at scale: append throughput at 1k vs 1M stored messages, start time, RSS, read latency (file store or PostgreSQL)."
    )

    enum Backend: String, ExpressibleByArgument, CaseIterable {
        case files, postgres
    }

    @Option(help: "The store to measure: files (the file store) or postgres (a throwaway PostgreSQL cluster started with Scripts/postgres-dev, stopped at the end).")
    var backend = Backend.files
    @Option(help: "Tenants to create.") var tenants = 1000
    @Option(help: "Messages to store in total.") var messages = 1_000_000
    @Option(help: "Tickets per tenant (the largest tenant gets ten times as many).") var tickets = 10
    @Option(help: "Share of all messages that go to the largest tenant.") var largestShare = 0.1
    @Option(help: "Concurrent writers while filling.") var concurrency = 64
    @Option(help: "Messages each append probe writes (one probe with 16 concurrent writers, one with 64).") var probeMessages = 4000
    @Option(help: "Requests per read-latency measurement.") var requests = 200
    @Option(help: "Directory for the store or the PostgreSQL cluster (default: a new one under /tmp, removed afterwards).") var directory: String?
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "Scripts/postgres-dev, for --backend postgres (default: the one in the working directory or the repository of this build).")
    var postgresDev: String?
    @Option(help: "Where to write the results as JSON.") var json = "bench-store.json"

    static let password = "bench password"
    /// Concurrent writers of the append probes, each in a ticket of its own (as far as there are
    /// tickets).
    static let probeWriters = [16, 64]

    func run() async throws {
        let work = directory ?? NSTemporaryDirectory() + "deskline-bench-store-" + UUID().uuidString
        let binary = desklineBinary(deskline)
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no deskline binary at \(binary) (--deskline)") }
        guard tenants >= 2, tickets >= 1, messages >= tenants * tickets else { throw BenchError("need at least 2 tenants and a message per ticket") }
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: work) } }
        say("Machine: \(machineDescription()); \(backend == .files ? "store" : "PostgreSQL cluster and configs") in \(work)")

        let storeBackend: any StoreBenchBackend = switch backend {
        case .files: FilesBackend(work: work)
        case .postgres: try await PostgresBenchBackend.start(work: work, binary: binary, script: postgresDev)
        }
        do {
            try await measure(storeBackend, binary: binary)
        } catch {
            await storeBackend.shutdown()
            throw error
        }
        await storeBackend.shutdown()
    }

    /// Seeds, fills and probes the backend's store in-process, then measures a server on it.
    func measure(_ storeBackend: any StoreBenchBackend, binary: String) async throws {
        // An empty store first: the baseline for start time and memory.
        let empty = try await storeBackend.startServer(binary: binary, empty: true)
        let emptyStart = empty.startSeconds, emptyRSS = empty.rss()
        try empty.stop()

        let store = try await storeBackend.open()
        let hash = try PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)).hash(Self.password)
        let largest = TenantID(rawValue: "t0000")!
        let ids = (0..<tenants).map { TenantID(rawValue: String(format: "t%04d", $0))! }

        var clock = now()
        var customers: [TenantID: CustomerID] = [:]
        for id in ids {
            try await store.createTenant(Tenant(id: id, name: "Bench \(id)", createdAt: Date()))
            let customer = try await store.createCustomer(NewCustomer(name: "Customer", email: "customer@\(id).bench", phone: "+1 555 0100"), in: id, at: Date())
            _ = try await store.createUser(NewUser(email: "customer@\(id).bench", displayName: "Customer", role: .customer, passwordHash: hash, customerId: customer.id), in: id, at: Date())
            customers[id] = customer.id
        }
        _ = try await store.createUser(NewUser(email: "agent@t0000.bench", displayName: "Agent", role: .agent, passwordHash: hash, customerId: nil), in: largest, at: Date())
        var ticketsOf: [TenantID: [TicketID]] = [:]
        for id in ids {
            for i in 0..<(id == largest ? tickets * 10 : tickets) {
                ticketsOf[id, default: []].append(try await store.openTicket(customer: customers[id]!, subject: "Bench ticket \(i)", in: id, at: Date()).id)
            }
        }
        say("Created \(tenants) tenants and \(ticketsOf.values.map(\.count).reduce(0, +)) tickets in \(format(now() - clock)) s")

        // The largest tenant gets 10 messages per ticket: about 1k messages stored. Probe.
        let largestTickets = ticketsOf[largest]!
        var stored = try await fill(store, [(largest, largestTickets, largestTickets.count * 10)], customers)
        var early: [Probe] = []
        for writers in Self.probeWriters {
            let probe = try await self.probe(store, largest, largestTickets, writers: writers, stored: stored)
            say(probe.line)
            stored += probe.messages
            early.append(probe)
        }

        // Fill up to the total.
        let largestTotal = Int(Double(messages) * largestShare)
        let perOther = (messages - largestTotal) / (tenants - 1)
        var plan: [(TenantID, [TicketID], Int)] = [(largest, largestTickets, max(0, largestTotal - stored))]
        for id in ids where id != largest { plan.append((id, ticketsOf[id]!, perOther)) }
        let before = try await storeBackend.commitStatistics()
        clock = now()
        let filled = try await fill(store, plan, customers)
        let fillSeconds = now() - clock
        let after = try await storeBackend.commitStatistics()
        stored += filled
        let total = stored
        let perCommit = before.flatMap { b in after.map { a in Double(a.writes - b.writes) / Double(max(1, a.commits - b.commits)) } }
        say("Filled \(filled) messages in \(format(fillSeconds)) s (\(format(Double(filled) / fillSeconds, 0))/s"
            + (perCommit.map { ", \(format($0)) writes per commit" } ?? "") + "); \(total) stored")

        var late: [Probe] = []
        for writers in Self.probeWriters {
            let probe = try await self.probe(store, largest, largestTickets, writers: writers, stored: stored)
            say(probe.line)
            stored += probe.messages
            late.append(probe)
        }

        // Hand the store over as a cleanly stopped server would.
        let bytes = try await storeBackend.close()

        let server = try await storeBackend.startServer(binary: binary, empty: false)
        let reads: Reads
        do {
            reads = try await self.reads(server, largestTickets)
        } catch {
            try? server.stop()
            throw error
        }
        try server.stop()

        let perTicket = largestTotal / largestTickets.count
        var rows: [(String, String)] = [
            ("machine", machineDescription()),
            ("store", "\(storeBackend.name): \(tenants) tenants, \(total) messages, \(bytes / 1_048_576) MiB on disk"),
            ("fill (\(concurrency) writers)", "\(format(Double(filled) / fillSeconds, 0)) messages/s" + (perCommit.map { " (\(format($0)) writes per commit)" } ?? "")),
        ]
        for probe in early + late { rows.append(probe.row) }
        rows += [
            ("start, empty store", "\(format(emptyStart * 1000, 0)) ms, RSS \(emptyRSS.map { "\($0 / 1024) MiB" } ?? "?")"),
            ("start, full store", "\(format(reads.startSeconds * 1000, 0)) ms, RSS \(reads.startRSS.map { "\($0 / 1024) MiB" } ?? "?")"),
            ("RSS after the reads", reads.afterRSS.map { "\($0 / 1024) MiB" } ?? "?"),
            ("TICKETS (\(largestTickets.count) tickets)", "p50 \(format(reads.tickets.ms(0.5), 2)) ms, p99 \(format(reads.tickets.ms(0.99), 2)) ms"),
            ("HISTORY (~\(perTicket) in the ticket)", "p50 \(format(reads.history.ms(0.5), 2)) ms, p99 \(format(reads.history.ms(0.99), 2)) ms"),
            ("QUEUE (agent, \(largestTickets.count) tickets)", "p50 \(format(reads.queue.ms(0.5), 2)) ms, p99 \(format(reads.queue.ms(0.99), 2)) ms"),
        ]
        printTable("deskline-bench store, \(storeBackend.name) (largest tenant: \(largest), \(largestTotal) messages)", rows)
        var result: [String: Any] = [
            "machine": machineDescription(), "backend": backend.rawValue, "tenants": tenants, "messages": total, "bytesOnDisk": bytes,
            "fillPerSecond": Double(filled) / fillSeconds,
            "startEmptyMs": emptyStart * 1000, "startFullMs": reads.startSeconds * 1000,
            "rssEmptyKiB": emptyRSS ?? -1, "rssFullKiB": reads.startRSS ?? -1, "rssAfterReadsKiB": reads.afterRSS ?? -1,
            "ticketsMs": ["p50": reads.tickets.ms(0.5), "p99": reads.tickets.ms(0.99)],
            "historyMs": ["p50": reads.history.ms(0.5), "p99": reads.history.ms(0.99)],
            "queueMs": ["p50": reads.queue.ms(0.5), "p99": reads.queue.ms(0.99)],
        ]
        if let perCommit { result["writesPerCommit"] = perCommit }
        // appendEarly/appendLate: the 16-writer probes (as before the 64-writer ones were added).
        for (probe, key) in zip(early, ["appendEarly", "appendEarly64"]) { result[key] = probe.dictionary }
        for (probe, key) in zip(late, ["appendLate", "appendLate64"]) { result[key] = probe.dictionary }
        try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        say("\nResults written to \(json)")
    }

    /// Appends `count` messages to each plan item's tenant, spread over its tickets, with
    /// `concurrency` writers; returns how many were written.
    @discardableResult
    func fill(_ store: any Store, _ plan: [(TenantID, [TicketID], Int)], _ customers: [TenantID: CustomerID]) async throws -> Int {
        // Work units: (tenant, ticket, messages), tenant after tenant so that several writers
        // share each tenant's commits.
        var units: [(TenantID, TicketID, Int)] = []
        for (tenant, ids, count) in plan {
            for (i, id) in ids.enumerated() {
                let n = count / ids.count + (i < count % ids.count ? 1 : 0)
                if n > 0 { units.append((tenant, id, n)) }
            }
        }
        let queue = WorkQueue(units)
        let total = units.reduce(0) { $0 + $1.2 }
        let progress = total / 10
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var written = 0
                    while let (tenant, ticket, n) = queue.next() {
                        for m in 0..<n {
                            let draft = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Customer",
                                                         authorRole: .customer, text: "Message \(m) in \(ticket): the printer on the third floor still jams after the update.")
                            _ = try await store.appendEntry(draft, to: ticket, in: tenant, at: Date()) { _ in }
                            if progress > 0, queue.count() % progress == 0 { say("  ... \(queue.count()) of \(total)") }
                        }
                        written += n
                    }
                    return written
                }
            }
            return try await group.reduce(0, +)
        }
    }

    /// An append probe's figures.
    struct Probe {
        var writers: Int
        /// Messages stored before it.
        var stored: Int
        /// Messages it wrote.
        var messages: Int
        var rate: Double
        var samples: Histogram

        var figures: String { "\(format(rate, 0))/s, p50 \(format(samples.ms(0.5), 2)) ms, p99 \(format(samples.ms(0.99), 2)) ms" }
        var line: String { "Probe with \(stored) messages stored, \(writers) writers: \(figures)" }
        var row: (String, String) { ("append, \(stored) stored, \(writers) writers", figures) }
        var dictionary: [String: Any] {
            ["stored": stored, "writers": writers, "perSecond": rate, "p50ms": samples.ms(0.5), "p99ms": samples.ms(0.99)]
        }
    }

    /// `writers` concurrent writers append `probeMessages` messages in all to the tenant's
    /// tickets, writer w to ticket w (round the tickets again if there are fewer).
    func probe(_ store: any Store, _ tenant: TenantID, _ ids: [TicketID], writers: Int, stored: Int) async throws -> Probe {
        let start = now()
        let perWriter = max(1, probeMessages / writers)
        let all = try await withThrowingTaskGroup(of: Histogram.self) { group in
            for w in 0..<writers {
                let id = ids[w % ids.count]
                group.addTask {
                    var samples = Histogram()
                    for m in 0..<perWriter {
                        let draft = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Customer",
                                                     authorRole: .customer, text: "Probe \(m) in \(id): the printer on the third floor still jams after the update.")
                        let t = now()
                        _ = try await store.appendEntry(draft, to: id, in: tenant, at: Date()) { _ in }
                        samples.record(seconds: now() - t)
                    }
                    return samples
                }
            }
            var merged = Histogram()
            for try await samples in group { merged.merge(samples) }
            return merged
        }
        return Probe(writers: writers, stored: stored, messages: perWriter * writers, rate: Double(perWriter * writers) / (now() - start), samples: all)
    }

    /// What a server on the full store measured.
    struct Reads {
        var startSeconds: Double
        var startRSS: Int?
        var afterRSS: Int?
        var tickets = Histogram(), history = Histogram(), queue = Histogram()
    }

    /// TICKETS and HISTORY of the largest tenant's customer and QUEUE of its agent, over the
    /// server's sockets, `requests` times each.
    func reads(_ server: ServerRun, _ largestTickets: [TicketID]) async throws -> Reads {
        var reads = Reads(startSeconds: server.startSeconds, startRSS: server.rss())
        let group = MultiThreadedEventLoopGroup.singleton
        let customer = try await LineConnection.connect(group, port: server.port)
        _ = try await customer.command("LOGIN customer@t0000.bench \(Self.password)")
        let agent = try await LineConnection.connect(group, port: server.port)
        _ = try await agent.command("LOGIN agent@t0000.bench \(Self.password)")
        for i in 0..<requests {
            var t = now()
            let list = try await customer.reply("TICKETS")
            reads.tickets.record(seconds: now() - t)
            guard list.count == largestTickets.count + 1 else { throw BenchError("TICKETS listed \(list.count - 1) tickets, expected \(largestTickets.count)") }
            t = now()
            _ = try await customer.command("HISTORY \(largestTickets[i % largestTickets.count])")
            reads.history.record(seconds: now() - t)
            t = now()
            _ = try await agent.command("QUEUE")
            reads.queue.record(seconds: now() - t)
        }
        reads.afterRSS = server.rss()
        await customer.close()
        await agent.close()
        return reads
    }
}

/// What `deskline-bench store` does differently on each backend; the workload, the probes, the
/// reads over a server's sockets and the table are the same.
protocol StoreBenchBackend: Sendable {
    /// For the table ("file store", "PostgreSQL").
    var name: String { get }
    /// Starts `deskline serve` on the store: with `empty`, on a store the benchmark has not
    /// written to (the baseline), else on the store it filled, after ``close()``.
    func startServer(binary: String, empty: Bool) async throws -> ServerRun
    /// The store the benchmark writes to in-process.
    func open() async throws -> any Store
    /// Writes and commits of the in-process store so far (nil if it cannot tell).
    func commitStatistics() async throws -> (writes: Int, commits: Int)?
    /// Leaves the store as a cleanly stopped server would, ready for ``startServer(binary:empty:)``;
    /// returns the bytes it takes on disk.
    func close() async throws -> Int
    /// Stops whatever the backend started (also after a failure).
    func shutdown() async
}

/// The file store in `work`/full/data (the empty baseline in `work`/empty), written by a
/// ``FileStore`` on 16 threads as `deskline serve`'s.
final class FilesBackend: StoreBenchBackend {
    let name = "file store"
    let work: String
    private let pool = NIOThreadPool(numberOfThreads: 16)
    private let store = Mutex<FileStore?>(nil)
    /// Whether `pool` runs (from ``open()`` to ``close()``).
    private let pooling = Mutex(false)

    init(work: String) { self.work = work }

    func startServer(binary: String, empty: Bool) async throws -> ServerRun {
        try await ServerRun.start(binary: binary, work: work + (empty ? "/empty" : "/full"))
    }

    func open() async throws -> any Store {
        pool.start()
        pooling.withLock { $0 = true }
        let opened = try await FileStore(root: work + "/full/data", threadPool: pool)
        store.withLock { $0 = opened }
        return opened
    }

    func commitStatistics() async throws -> (writes: Int, commits: Int)? {
        store.withLock { $0 }?.writeStatistics()
    }

    func close() async throws -> Int {
        guard let store = store.withLock({ $0 }) else { throw BenchError("the store is not open") }
        _ = await store.waitUntilWritesFinish()
        _ = await store.checkpointAll()
        try await store.lockForServer(pid: getpid()).release(clean: true)
        self.store.withLock { $0 = nil }
        pooling.withLock { $0 = false }
        try await pool.shutdownGracefully()
        return directorySize(work + "/full/data")
    }

    func shutdown() async {
        if pooling.withLock({ $0 }) { try? await pool.shutdownGracefully() }
    }

    private func directorySize(_ path: String) -> Int {
        var total = 0
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let name = enumerator?.nextObject() as? String {
            total += ((try? FileManager.default.attributesOfItem(atPath: path + "/" + name))?[.size] as? Int) ?? 0
        }
        return total
    }
}

/// A throwaway PostgreSQL cluster in `work`/pg with the schema `deskline migrate` made, written
/// by a ``PostgresStore`` with a node's pool; the servers run with `storage.backend` `postgres`.
final class PostgresBenchBackend: StoreBenchBackend {
    let name = "PostgreSQL"
    let work: String
    let postgres: BenchPostgres
    /// The in-process store, while open.
    private let opened = Mutex<BenchPostgres.Connected?>(nil)

    private init(work: String, postgres: BenchPostgres) {
        self.work = work
        self.postgres = postgres
    }

    static func start(work: String, binary: String, script: String?) async throws -> PostgresBenchBackend {
        let postgres = try await BenchPostgres.start(in: work + "/pg", script: script)
        let backend = PostgresBenchBackend(work: work, postgres: postgres)
        do {
            say("PostgreSQL on \(postgres.settings.serverDescription) (\(postgres.directory)); deskline migrate:")
            try await postgres.migrate(binary: binary, work: work + "/migrate")
        } catch {
            await postgres.stop()
            throw error
        }
        return backend
    }

    func startServer(binary: String, empty: Bool) async throws -> ServerRun {
        try await ServerRun.start(binary: binary, work: work + (empty ? "/empty" : "/full"), storage: postgres.storage)
    }

    func open() async throws -> any Store {
        let connected = try postgres.connect()
        opened.withLock { $0 = connected }
        return connected.store
    }

    /// Messages in `entries` and the transactions that inserted them (their distinct `xmin`): the
    /// store commits a batch of a tenant's writes per transaction.
    func commitStatistics() async throws -> (writes: Int, commits: Int)? {
        guard let client = opened.withLock({ $0?.client }) else { return nil }
        let s = "\"\(postgres.settings.schema)\"."
        let counts = try await BenchPostgres.count(client, "SELECT count(*)::bigint, count(DISTINCT xmin::text)::bigint FROM \(unescaped: s)entries")
        guard counts.count == 2 else { return nil }
        return (counts[0], counts[1])
    }

    func close() async throws -> Int {
        guard let connected = opened.withLock({ $0 }) else { throw BenchError("the store is not open") }
        let bytes = try await BenchPostgres.count(connected.client, "SELECT pg_database_size(current_database())::bigint").first ?? 0
        await connected.close()
        opened.withLock { $0 = nil }
        return bytes
    }

    func shutdown() async {
        if let connected = opened.withLock({ $0 }) { await connected.close() }
        await postgres.stop()
    }
}

/// Hands out work units to concurrent writers.
final class WorkQueue: Sendable {
    private let state: Mutex<(units: [(TenantID, TicketID, Int)], next: Int, written: Int)>

    init(_ units: [(TenantID, TicketID, Int)]) { state = Mutex((units, 0, 0)) }

    func next() -> (TenantID, TicketID, Int)? {
        state.withLock { state in
            guard state.next < state.units.count else { return nil }
            defer { state.next += 1 }
            return state.units[state.next]
        }
    }

    /// Counts one written message; returns the count so far.
    func count() -> Int { state.withLock { $0.written += 1; return $0.written } }
}
