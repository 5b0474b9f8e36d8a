import ArgumentParser
import DesklineCore
import DesklineStore
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Fills a file store with many tenants and messages, then measures what must not grow with
/// history: append throughput and latency, server start time and memory, and read latency.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "File store at scale: append throughput at 1k vs 1M stored messages, start time, RSS, read latency."
    )

    @Option(help: "Tenants to create.") var tenants = 1000
    @Option(help: "Messages to store in total.") var messages = 1_000_000
    @Option(help: "Tickets per tenant (the largest tenant gets ten times as many).") var tickets = 10
    @Option(help: "Share of all messages that go to the largest tenant.") var largestShare = 0.1
    @Option(help: "Concurrent writers while filling.") var concurrency = 64
    @Option(help: "Messages the append probe writes (16 concurrent writers).") var probeMessages = 4000
    @Option(help: "Requests per read-latency measurement.") var requests = 200
    @Option(help: "Directory for the store (default: a new one under /tmp, removed afterwards).") var directory: String?
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "Where to write the results as JSON.") var json = "bench-store.json"

    static let password = "bench password"

    func run() async throws {
        let work = directory ?? NSTemporaryDirectory() + "deskline-bench-store-" + UUID().uuidString
        let binary = desklineBinary(deskline)
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no deskline binary at \(binary) (--deskline)") }
        guard tenants >= 2, tickets >= 1, messages >= tenants * tickets else { throw BenchError("need at least 2 tenants and a message per ticket") }
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: work) } }
        say("Machine: \(machineDescription()); store in \(work)")

        // An empty store first: the baseline for start time and memory.
        let empty = try await ServerRun.start(binary: binary, work: work + "/empty")
        let emptyStart = empty.startSeconds, emptyRSS = empty.rss()
        try empty.stop()

        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        let store = try await FileStore(root: work + "/full/data", threadPool: pool)
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
        try await fill(store, [(largest, largestTickets, largestTickets.count * 10)], customers)
        let probeTickets = Array(largestTickets.prefix(16))
        let early = try await probe(store, largest, probeTickets, customers[largest]!)
        let storedEarly = largestTickets.count * 10
        say("Probe with \(storedEarly) messages stored: \(format(early.rate, 0)) appends/s, p50 \(format(early.samples.ms(0.5), 2)) ms, p99 \(format(early.samples.ms(0.99), 2)) ms")

        // Fill up to the total.
        let largestTotal = Int(Double(messages) * largestShare)
        let perOther = (messages - largestTotal) / (tenants - 1)
        var plan: [(TenantID, [TicketID], Int)] = [(largest, largestTickets, max(0, largestTotal - storedEarly - probeMessages))]
        for id in ids where id != largest { plan.append((id, ticketsOf[id]!, perOther)) }
        let before = store.writeStatistics()
        clock = now()
        let filled = try await fill(store, plan, customers)
        let fillSeconds = now() - clock
        let after = store.writeStatistics()
        let total = storedEarly + probeMessages + filled
        say("Filled \(filled) messages in \(format(fillSeconds)) s (\(format(Double(filled) / fillSeconds, 0))/s, \(format(Double(after.writes - before.writes) / Double(max(1, after.commits - before.commits)))) writes per commit); \(total) stored")

        let late = try await probe(store, largest, probeTickets, customers[largest]!)
        say("Probe with \(total) messages stored: \(format(late.rate, 0)) appends/s, p50 \(format(late.samples.ms(0.5), 2)) ms, p99 \(format(late.samples.ms(0.99), 2)) ms")

        // Hand the directory over as a cleanly stopped server would.
        _ = await store.waitUntilWritesFinish()
        _ = await store.checkpointAll()
        try await store.lockForServer(pid: getpid()).release(clean: true)
        try await pool.shutdownGracefully()
        let bytes = directorySize(work + "/full/data")

        let server = try await ServerRun.start(binary: binary, work: work + "/full")
        let startSeconds = server.startSeconds, startRSS = server.rss()
        let group = MultiThreadedEventLoopGroup.singleton
        let customer = try await LineConnection.connect(group, port: server.port)
        _ = try await customer.command("LOGIN customer@t0000.bench \(Self.password)")
        let agent = try await LineConnection.connect(group, port: server.port)
        _ = try await agent.command("LOGIN agent@t0000.bench \(Self.password)")
        var ticketsLatency = Histogram(), historyLatency = Histogram(), queueLatency = Histogram()
        for i in 0..<requests {
            var t = now()
            let list = try await customer.reply("TICKETS")
            ticketsLatency.record(seconds: now() - t)
            guard list.count == largestTickets.count + 1 else { throw BenchError("TICKETS listed \(list.count - 1) tickets, expected \(largestTickets.count)") }
            t = now()
            _ = try await customer.command("HISTORY \(largestTickets[i % largestTickets.count])")
            historyLatency.record(seconds: now() - t)
            t = now()
            _ = try await agent.command("QUEUE")
            queueLatency.record(seconds: now() - t)
        }
        let afterReadsRSS = server.rss()
        try server.stop()

        let perTicket = largestTotal / largestTickets.count
        let rows: [(String, String)] = [
            ("machine", machineDescription()),
            ("store", "\(tenants) tenants, \(total) messages, \(bytes / 1_048_576) MiB on disk"),
            ("fill (\(concurrency) writers)", "\(format(Double(filled) / fillSeconds, 0)) messages/s"),
            ("append, \(storedEarly) stored", "\(format(early.rate, 0))/s, p50 \(format(early.samples.ms(0.5), 2)) ms, p99 \(format(early.samples.ms(0.99), 2)) ms"),
            ("append, \(total) stored", "\(format(late.rate, 0))/s, p50 \(format(late.samples.ms(0.5), 2)) ms, p99 \(format(late.samples.ms(0.99), 2)) ms"),
            ("start, empty store", "\(format(emptyStart * 1000, 0)) ms, RSS \(emptyRSS.map { "\($0 / 1024) MiB" } ?? "?")"),
            ("start, full store", "\(format(startSeconds * 1000, 0)) ms, RSS \(startRSS.map { "\($0 / 1024) MiB" } ?? "?")"),
            ("RSS after the reads", afterReadsRSS.map { "\($0 / 1024) MiB" } ?? "?"),
            ("TICKETS (\(largestTickets.count) tickets)", "p50 \(format(ticketsLatency.ms(0.5), 2)) ms, p99 \(format(ticketsLatency.ms(0.99), 2)) ms"),
            ("HISTORY (~\(perTicket) in the ticket)", "p50 \(format(historyLatency.ms(0.5), 2)) ms, p99 \(format(historyLatency.ms(0.99), 2)) ms"),
            ("QUEUE (agent, \(largestTickets.count) tickets)", "p50 \(format(queueLatency.ms(0.5), 2)) ms, p99 \(format(queueLatency.ms(0.99), 2)) ms"),
        ]
        printTable("deskline-bench store (largest tenant: \(largest), \(largestTotal) messages)", rows)
        let result: [String: Any] = [
            "machine": machineDescription(), "tenants": tenants, "messages": total, "bytesOnDisk": bytes,
            "fillPerSecond": Double(filled) / fillSeconds,
            "appendEarly": ["stored": storedEarly, "perSecond": early.rate, "p50ms": early.samples.ms(0.5), "p99ms": early.samples.ms(0.99)],
            "appendLate": ["stored": total, "perSecond": late.rate, "p50ms": late.samples.ms(0.5), "p99ms": late.samples.ms(0.99)],
            "startEmptyMs": emptyStart * 1000, "startFullMs": startSeconds * 1000,
            "rssEmptyKiB": emptyRSS ?? -1, "rssFullKiB": startRSS ?? -1, "rssAfterReadsKiB": afterReadsRSS ?? -1,
            "ticketsMs": ["p50": ticketsLatency.ms(0.5), "p99": ticketsLatency.ms(0.99)],
            "historyMs": ["p50": historyLatency.ms(0.5), "p99": historyLatency.ms(0.99)],
            "queueMs": ["p50": queueLatency.ms(0.5), "p99": queueLatency.ms(0.99)],
        ]
        try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        say("\nResults written to \(json)")
    }

    /// Appends `count` messages to each plan item's tenant, spread over its tickets, with
    /// `concurrency` writers; returns how many were written.
    @discardableResult
    func fill(_ store: FileStore, _ plan: [(TenantID, [TicketID], Int)], _ customers: [TenantID: CustomerID]) async throws -> Int {
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

    /// 16 writers append `probeMessages` messages to the given tickets, one ticket each.
    func probe(_ store: FileStore, _ tenant: TenantID, _ ids: [TicketID], _ customer: CustomerID) async throws -> (rate: Double, samples: Histogram) {
        let start = now()
        let perWriter = probeMessages / ids.count
        let all = try await withThrowingTaskGroup(of: Histogram.self) { group in
            for id in ids {
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
        return (Double(perWriter * ids.count) / (now() - start), all)
    }

    func directorySize(_ path: String) -> Int {
        var total = 0
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let name = enumerator?.nextObject() as? String {
            total += ((try? FileManager.default.attributesOfItem(atPath: path + "/" + name))?[.size] as? Int) ?? 0
        }
        return total
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

/// A `deskline serve` process on a fresh port.
struct ServerRun {
    let process: Process
    let port: Int
    /// The IRC listener's port.
    var ircPort: Int?
    let startSeconds: Double

    static func start(binary: String, work: String, limits: [String: Int] = [:], storage: [String: Int] = [:]) async throws -> ServerRun {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let config = work + "/config.json"
        var allLimits: [String: Int] = ["maxConnectionsPerAddress": 100_000, "maxNewConnectionsPerAddressPerMinute": 1_000_000,
                                        "floodBurst": 100_000, "floodCommandsPerSecond": 100_000]
        allLimits.merge(limits) { $1 }
        let settings: [String: Any] = ["listen": ["port": 0], "irc": ["port": 0], "dataDirectory": work + "/data", "logLevel": "warning",
                                       "passwordHashing": ["scryptN": 1024], "limits": allLimits, "storage": storage]
        try JSONSerialization.data(withJSONObject: settings).write(to: URL(fileURLWithPath: config))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let start = now()
        try process.run()
        var text = ""
        while true {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { throw BenchError("the server exited before listening:\n\(text)") }
            text += String(decoding: data, as: UTF8.self)
            if let range = text.range(of: #"Connect with: nc \S+ (\d+)"#, options: .regularExpression),
               let irc = text.range(of: #"listening for IRC clients on [0-9.]+:(\d+)"#, options: .regularExpression) {
                let port = Int(text[range].split(separator: " ").last!)!
                let ircPort = Int(text[irc].split(separator: ":").last!)
                return ServerRun(process: process, port: port, ircPort: ircPort, startSeconds: now() - start)
            }
        }
    }

    /// The server's resident set size in KiB.
    func rss() -> Int? { residentKiB(of: process.processIdentifier) }

    func stop() throws {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
