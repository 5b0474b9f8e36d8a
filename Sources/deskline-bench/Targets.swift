import DesklineCore
import DesklineStore
import Foundation
import NIOCore
import NIOPosix

/// A server the fan-out workload can drive: its senders, its watchers and its message lines.
protocol FanoutTarget: Sendable {
    var name: String { get }
    /// A logged-in (registered) connection that will send in ticket `ticket`.
    func sender(_ ticket: Int, group: EventLoopGroup) async throws -> LineConnection
    /// A logged-in connection that receives every message of `ticket`.
    func watcher(_ ticket: Int, _ watcher: Int, group: EventLoopGroup) async throws -> LineConnection
    /// A logged-in (registered) connection that only stays, the `index`th of many.
    func idle(_ index: Int, group: EventLoopGroup) async throws -> LineConnection
    /// The line a sender sends, carrying `stamp`.
    func message(_ ticket: Int, stamp: Int64) -> String
    /// The pid of the server process (for RSS).
    var pid: Int32 { get }
    /// The server processes whose CPU time a step counts (every node of the target).
    var cpuPids: [Int32] { get }
}

extension FanoutTarget {
    var cpuPids: [Int32] { [pid] }
}

/// What comes right before the stamp in a delivered message, in both protocols (`... :bench <ns>`).
let stampMarker = Array(" :bench ".utf8)

/// Deskline, started by the benchmark on a store it prepared: one server, or (on PostgreSQL)
/// senders on one node and watchers on another.
struct DesklineTarget: FanoutTarget {
    var name = "Deskline"
    /// The server (node) the senders, the idle sessions and the storm's logins connect to.
    let server: ServerRun
    /// The server (node) the watchers connect to: `server`, or another node of its PostgreSQL.
    let watcherServer: ServerRun
    /// Ticket number of each sender's ticket.
    let tickets: [Int]
    static let password = "bench password"

    var pid: Int32 { server.process.processIdentifier }
    var cpuPids: [Int32] {
        server.port == watcherServer.port ? [pid] : [pid, watcherServer.process.processIdentifier]
    }

    /// The server's limits: none a benchmark may run into.
    static let limits = [
        "maxConnectionsPerAddress": 1_000_000, "maxConnections": 100_000, "maxNewConnectionsPerAddressPerMinute": 1_000_000,
        "floodBurst": 100_000, "floodCommandsPerSecond": 100_000, "sendQueueLines": 100_000,
        "loginFailuresPerAddress": 1_000_000, "pingIntervalSeconds": 3600,
    ]

    /// Creates the file store in `work`/data with ``seed(_:tickets:watchers:stormUsers:)`` and
    /// starts the server on it (with the server's default group commit interval unless one is
    /// given).
    static func start(binary: String, work: String, tickets count: Int, watchers: Int, stormUsers: Int,
                      groupCommitMilliseconds: Int?) async throws -> DesklineTarget {
        try? FileManager.default.removeItem(atPath: work)
        let store = try await FileStore(root: work + "/data")
        let ids = try await seed(store, tickets: count, watchers: watchers, stormUsers: stormUsers)
        _ = await store.checkpointAll()
        try await store.lockForServer(pid: getpid()).release(clean: true)
        let server = try await ServerRun.start(binary: binary, work: work, limits: limits,
                                               storage: groupCommitMilliseconds.map { ["groupCommitIntervalMilliseconds": $0] } ?? [:])
        return DesklineTarget(server: server, watcherServer: server, tickets: ids)
    }

    /// Creates tenant `bench` with `tickets` customers (one ticket each, assigned to an agent
    /// nobody logs in as, so the only pushes are to the sessions that JOINed), `watchers` agent
    /// users, and `stormUsers` agents whose hashes have the production cost; returns the ticket
    /// numbers.
    static func seed(_ store: any Store, tickets count: Int, watchers: Int, stormUsers: Int) async throws -> [Int] {
        let cheap = try PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)).hash(password)
        let tenant = TenantID(rawValue: "bench")!
        try await store.createTenant(Tenant(id: tenant, name: "Bench", createdAt: Date()))
        let owner = try await store.createUser(NewUser(email: "owner@bench.test", displayName: "Owner", role: .agent, passwordHash: cheap, customerId: nil), in: tenant, at: Date())
        for w in 0..<watchers {
            _ = try await store.createUser(NewUser(email: "agent\(w)@bench.test", displayName: "Agent \(w)", role: .agent, passwordHash: cheap, customerId: nil), in: tenant, at: Date())
        }
        if stormUsers > 0 {
            let real = try PasswordHasher(cost: .standard).hash(password)
            for s in 0..<stormUsers {
                _ = try await store.createUser(NewUser(email: "storm\(s)@bench.test", displayName: "Storm \(s)", role: .agent, passwordHash: real, customerId: nil), in: tenant, at: Date())
            }
        }
        var ids: [Int] = []
        for t in 0..<count {
            let customer = try await store.createCustomer(NewCustomer(name: "Customer \(t)", email: "customer\(t)@bench.test", phone: nil), in: tenant, at: Date())
            _ = try await store.createUser(NewUser(email: "customer\(t)@bench.test", displayName: "Customer \(t)", role: .customer, passwordHash: cheap, customerId: customer.id), in: tenant, at: Date())
            let ticket = try await store.openTicket(customer: customer.id, subject: "Bench \(t)", in: tenant, at: Date())
            let ownerId = owner.id
            _ = try await store.appendEntry(nil, to: ticket.id, in: tenant, at: Date()) { t in
                t.assigneeId = ownerId
                t.assigneeName = "Owner"
            }
            ids.append(ticket.id.number)
        }
        return ids
    }

    func sender(_ ticket: Int, group: EventLoopGroup) async throws -> LineConnection {
        try await login(group, "customer\(ticket)@bench.test", on: server)
    }

    func watcher(_ ticket: Int, _ watcher: Int, group: EventLoopGroup) async throws -> LineConnection {
        let connection = try await login(group, "agent\(watcher)@bench.test", on: watcherServer)
        let joined = try await connection.command("JOIN #\(tickets[ticket])")
        guard joined.hasPrefix("OK") else { throw BenchError("JOIN: \(joined)") }
        return connection
    }

    /// Logs in, waiting and retrying while the server answers BUSY (its password checks are
    /// bounded on purpose; the setup of thousands of sessions runs into that bound).
    func login(_ group: EventLoopGroup, _ email: String, on node: ServerRun) async throws -> LineConnection {
        let connection = try await LineConnection.connect(group, port: node.port)
        for _ in 0..<1000 {
            let reply = try await connection.command("LOGIN \(email) \(Self.password)")
            if reply.hasPrefix("OK") { return connection }
            guard reply.contains(" BUSY ") else { throw BenchError("LOGIN \(email): \(reply)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw BenchError("LOGIN \(email): still busy")
    }

    func idle(_ index: Int, group: EventLoopGroup) async throws -> LineConnection {
        try await login(group, "agent0@bench.test", on: server)
    }

    func message(_ ticket: Int, stamp: Int64) -> String {
        "MSG #\(tickets[ticket]) :bench \(stamp)\r\n"
    }
}

/// Deskline's IRC dialect on the same server and data as ``DesklineTarget``: customers send with
/// `PRIVMSG #<ticket>` (joined to their ticket at registration), agents `JOIN` it.
struct DesklineIRCTarget: FanoutTarget {
    let name = "Deskline IRC"
    let desk: DesklineTarget
    let port: Int

    var pid: Int32 { desk.pid }

    func sender(_ ticket: Int, group: EventLoopGroup) async throws -> LineConnection {
        try await register(group, "customer\(ticket)@bench.test")
    }

    func watcher(_ ticket: Int, _ watcher: Int, group: EventLoopGroup) async throws -> LineConnection {
        let connection = try await register(group, "agent\(watcher)@bench.test")
        // The JOIN burst and its replay, then the PONG: everything of the JOIN is read.
        let lines = try await connection.request("JOIN #\(desk.tickets[ticket])\r\nPING :joined") { $0.hasSuffix(" :joined") || $0.contains(" 403 ") }
        guard lines.contains(where: { $0.contains(" 366 ") }) else { throw BenchError("\(name): JOIN: \(lines.last ?? "")") }
        return connection
    }

    func idle(_ index: Int, group: EventLoopGroup) async throws -> LineConnection {
        try await register(group, "agent0@bench.test")
    }

    /// Registers with PASS (the server chooses the nick), retrying while its password checks are
    /// busy; returns once the welcome burst is read.
    func register(_ group: EventLoopGroup, _ login: String) async throws -> LineConnection {
        for _ in 0..<1000 {
            let connection = try await LineConnection.connect(group, port: port)
            let lines = try await connection.request("PASS \(login):\(DesklineTarget.password)\r\nNICK bench\r\nUSER bench 0 * :bench\r\nPING :ready") {
                $0.hasSuffix(" :ready") || $0.hasPrefix("ERROR")
            }
            if lines.last?.hasSuffix(" :ready") == true, lines.contains(where: { $0.contains(" 001 ") }) { return connection }
            await connection.close()
            guard lines.contains(where: { $0.contains("busy") }) else { throw BenchError("\(name): registration of \(login): \(lines.last ?? "")") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw BenchError("\(name): registration of \(login): still busy")
    }

    func message(_ ticket: Int, stamp: Int64) -> String {
        "PRIVMSG #\(desk.tickets[ticket]) :bench \(stamp)\r\n"
    }
}

/// A classic IRC daemon already running on loopback (started by Scripts/irc-daemons).
struct IRCTarget: FanoutTarget {
    let name: String
    let port: Int
    let pid: Int32

    func sender(_ ticket: Int, group: EventLoopGroup) async throws -> LineConnection {
        let connection = try await register(group, nick: "s\(ticket)")
        try await join(connection, "#t\(ticket)")
        return connection
    }

    func watcher(_ ticket: Int, _ watcher: Int, group: EventLoopGroup) async throws -> LineConnection {
        let connection = try await register(group, nick: "w\(ticket)x\(watcher)")
        try await join(connection, "#t\(ticket)")
        return connection
    }

    func register(_ group: EventLoopGroup, nick: String) async throws -> LineConnection {
        let connection = try await LineConnection.connect(group, port: port)
        let welcome = try await connection.request("NICK \(nick)\r\nUSER \(nick) 0 * :\(nick)") { line in
            line.contains(" 001 ") || line.hasPrefix("ERROR") || line.contains(" 433 ")
        }.last!
        guard welcome.contains(" 001 ") else { throw BenchError("\(name): registration of \(nick): \(welcome)") }
        return connection
    }

    func join(_ connection: LineConnection, _ channel: String) async throws {
        let reply = try await connection.request("JOIN \(channel)") { line in
            line.contains(" 366 ") || line.hasPrefix("ERROR") || line.contains(" 405 ") || line.contains(" 471 ")
        }.last!
        guard reply.contains(" 366 ") else { throw BenchError("\(name): JOIN \(channel): \(reply)") }
    }

    func idle(_ index: Int, group: EventLoopGroup) async throws -> LineConnection {
        try await register(group, nick: "i\(index)")
    }

    func message(_ ticket: Int, stamp: Int64) -> String {
        "PRIVMSG #t\(ticket) :bench \(stamp)\r\n"
    }
}
