import DesklineCore
import DesklineGateway
import DesklinePostgres
import DesklinePostgresTesting
import Foundation
import Logging
import PostgresNIO
import Testing

/// A gateway node on PostgreSQL: its own client (connections), store, hub and listeners, as a
/// `deskline serve` process with `storage.backend` "postgres" has.
struct TestNode {
    let server: GatewayServer
    let port: Int
    let store: PostgresStore
    let accounts: AccountService
    private let tasks: [Task<Void, any Error>]
    private let pool: PasswordWorkPool

    /// `configure` may change the configuration (limits, an IRC listener) before the node starts.
    static func start(_ settings: PostgresSettings, password: String,
                      configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> TestNode {
        var config = GatewayConfiguration()
        config.listen.port = 0
        config.irc.enabled = false
        config.passwordHashing = PasswordHashingCost(n: 1024, r: 8, p: 1)
        config.limits.loginFailureDelayMilliseconds = 0
        config.storage.backend = .postgres
        config.storage.postgres = settings
        configure(&config)
        let client = PostgresClient(configuration: settings.clientConfiguration(password: password, connections: 5))
        let clientTask = Task<Void, any Error> { await client.run() }
        let store = PostgresStore(client: client, settings: settings, logger: TestPostgres.logger)
        let storeTask = Task<Void, any Error> { await store.run() }
        let pool = PasswordWorkPool(concurrency: 1, queueLimit: 64)
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: config.passwordHashing), passwordWork: pool)
        var quiet = Logger(label: "test-node")
        quiet.logLevel = .critical
        let server = GatewayServer(configuration: config, services: .make(store: store, accounts: accounts, limits: config.limits),
                                   logger: quiet, shutdownGracePeriod: .milliseconds(500), lingerTime: .milliseconds(500))
        let port = try await server.bind().port!
        let serverTask = Task { try await server.run() }
        return TestNode(server: server, port: port, store: store, accounts: accounts, tasks: [serverTask, storeTask, clientTask], pool: pool)
    }

    func login(_ email: String) async throws -> TestClient {
        let client = try await TestClient.connect(port: port)
        _ = try await client.readLine()
        try await client.send("LOGIN \(email) \(TestServer.password)")
        let reply = try #require(try await client.readLine())
        #expect(reply.hasPrefix("OK LOGIN "), "login of \(email): \(reply)")
        return client
    }

    /// Stops the store's service (its node loops: the heartbeat, presence, the event feed) and
    /// waits until it has ended; the gateway serves on.
    func silenceStore() async {
        tasks[1].cancel()
        _ = await tasks[1].result
    }

    func stop() async {
        server.shutdown()
        _ = try? await tasks[0].value
        for task in tasks.dropFirst() { task.cancel() }
        await pool.shutdown()
    }
}

/// Two nodes on one schema, seeded as ``TestServer``'s data (acme: Ann c1/u1, Amy u2, Ada u3,
/// Bob c2/u4, Abe u5).
func withTwoNodes(_ body: (TestNode, TestNode) async throws -> Void) async throws {
    try await withTwoNodes { a, b, _ in try await body(a, b) }
}

/// ``withTwoNodes(_:)`` with each node started with `configure`; `body` also gets the schema's
/// settings.
func withTwoNodes(configure: (inout GatewayConfiguration) -> Void = { _ in },
                  _ body: (TestNode, TestNode, PostgresSettings) async throws -> Void) async throws {
    let postgres = try await TestPostgres.server()
    let settings = try await TestPostgres.freshSchema(postgres)
    let a = try await TestNode.start(settings, password: postgres.password, configure: configure)
    let b = try await TestNode.start(settings, password: postgres.password, configure: configure)
    do {
        try await TestServer.seed(a.accounts)
        try await body(a, b, settings)
    } catch {
        await a.stop()
        await b.stop()
        throw error
    }
    await a.stop()
    await b.stop()
}

struct MultiNodeTests {
    @Test func anEventCommittedOnOneNodeReachesEverySessionItConcernsOnTheOther() async throws {
        try await withTwoNodes { a, b in
            let ann = try await a.login("ann@acme.test")
            let amyOnB = try await b.login("amy@acme.test")
            let adaOnB = try await b.login("ada@acme.test")
            let bobOnB = try await b.login("bob@acme.test")

            #expect(try await ann.command("NEW :Printer on fire").last?.hasPrefix("OK NEW #1001 ") == true)
            // Admins are told of a new ticket, on whichever node they are.
            #expect(try await adaOnB.expectLine(startingWith: "EVENT NEW #1001 ").hasSuffix(":Printer on fire"))
            #expect(try await ann.command("MSG #1001 :help please").last?.hasPrefix("OK MSG #1001 1 ") == true)
            // Unassigned: every agent.
            #expect(try await amyOnB.expectLine(startingWith: "EVENT TICKET #1001 1 ").hasSuffix(":help please"))

            // Amy also logs in on node A: both of her sessions get her tenant's pushes, and the
            // one that writes gets its OK instead.
            let amyOnA = try await a.login("amy@acme.test")
            #expect(try await amyOnB.command("ASSIGN #1001 me").last?.hasPrefix("OK ASSIGN #1001 2 ") == true)
            #expect(try await amyOnB.command("NOTE #1001 :check the toner").last?.hasPrefix("OK NOTE #1001 2.1 ") == true)
            #expect(try await amyOnB.command("MSG #1001 :on my way").last?.hasPrefix("OK MSG #1001 3 ") == true)
            #expect(try await amyOnA.expectLine(startingWith: "EVENT TICKET #1001 2 ").contains(" status "))
            #expect(try await amyOnA.expectLine(startingWith: "EVENT TICKET #1001 2.1 ").hasSuffix(":check the toner"))
            #expect(try await amyOnA.expectLine(startingWith: "EVENT TICKET #1001 3 ").hasSuffix(":on my way"))
            // The customer on node A: the status line and the reply, never the note.
            #expect(try await ann.readLine()?.hasPrefix("EVENT TICKET #1001 2 ") == true)
            #expect(try await ann.readLine()?.hasPrefix("EVENT TICKET #1001 3 ") == true)
            // Another customer of the tenant, on node B: nothing of Ann's ticket (the next line
            // Bob reads is the answer to his own command).
            #expect(try await bobOnB.command("TICKETS").last?.hasPrefix("OK TICKETS 0") == true)
            // Nothing was pushed twice: the next line of each is the answer to a PING.
            for client in [ann, amyOnA, amyOnB, adaOnB] {
                #expect(try await client.command("PING x") == ["OK PING :x"])
            }
            for client in [ann, amyOnA, amyOnB, adaOnB, bobOnB] { await client.close() }
        }
    }

    @Test func aBurstOnOneNodeReachesTheOtherOnceAndInOrder() async throws {
        try await withTwoNodes { a, b in
            let ann = try await a.login("ann@acme.test")
            let amy = try await b.login("amy@acme.test")
            #expect(try await ann.command("NEW :Many lines").last?.hasPrefix("OK NEW #1001 ") == true)
            let count = 60
            for n in 1...count { try await ann.send("MSG #1001 :line \(n)") }
            var replies: [String] = []
            while replies.count < count { if let line = try await ann.readLine() { replies.append(line) } }
            #expect(replies == (1...count).map { replies[$0 - 1].hasPrefix("OK MSG #1001 \($0) ") ? replies[$0 - 1] : "missing \($0)" })
            var pushed: [String] = []
            while pushed.count < count {
                let line = try await amy.expectLine(startingWith: "EVENT TICKET #1001 ")
                pushed.append(line)
            }
            #expect(pushed.map { $0.split(separator: " ")[3] } == (1...count).map { Substring(String($0)) })
            #expect(pushed.map { $0.components(separatedBy: " :").last ?? "" } == (1...count).map { "line \($0)" })
            #expect(try await amy.command("PING y") == ["OK PING :y"])
            await ann.close()
            await amy.close()
        }
    }

    @Test func aNodeThatStartsLaterGetsOnlyWhatIsCommittedFromThenOnAndStaysInStep() async throws {
        let postgres = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(postgres)
        let a = try await TestNode.start(settings, password: postgres.password)
        try await TestServer.seed(a.accounts)
        let ann = try await a.login("ann@acme.test")
        #expect(try await ann.command("NEW :Before").last?.hasPrefix("OK NEW #1001 ") == true)
        #expect(try await ann.command("MSG #1001 :old").last?.hasPrefix("OK MSG #1001 1 ") == true)
        let b = try await TestNode.start(settings, password: postgres.password)
        let amy = try await b.login("amy@acme.test")
        #expect(try await ann.command("MSG #1001 :new").last?.hasPrefix("OK MSG #1001 2 ") == true)
        #expect(try await amy.expectLine(startingWith: "EVENT TICKET #1001 ").hasPrefix("EVENT TICKET #1001 2 "))
        await ann.close()
        await amy.close()
        await a.stop()
        await b.stop()
    }
}

struct PostgresFaultTests {
    /// PostgreSQL stops for a few seconds while a customer writes on node A and an agent watches
    /// on node B: writes meanwhile get `STORAGE_ERROR` within the request timeout (no hang),
    /// both nodes reconnect by themselves, every acknowledged message is stored once, and B
    /// pushes each acknowledged message once, in order, after catching up.
    @Test func aStoppedServerGivesPromptStorageErrorsAndTheNodesCatchUpByThemselves() async throws {
        let cluster = try await PrivateCluster.start()
        var settings = cluster.settings
        settings.requestTimeoutSeconds = 2
        settings.connectTimeoutSeconds = 1
        settings.pollIntervalMilliseconds = 200
        let a = try await TestNode.start(settings, password: cluster.password)
        let b = try await TestNode.start(settings, password: cluster.password)
        do {
            try await TestServer.seed(a.accounts)
            let ann = try await a.login("ann@acme.test")
            let amy = try await b.login("amy@acme.test")
            #expect(try await ann.command("NEW :Outage").last?.hasPrefix("OK NEW #1001 ") == true)
            var acknowledged: [String] = []
            var refused = 0
            var stopped = false
            var restarted = false
            for n in 1...30 {
                if n == 10 {
                    try await cluster.stopServer()
                    stopped = true
                }
                if n == 14 {
                    try await cluster.startServer()
                    restarted = true
                }
                let started = ContinuousClock.now
                let reply = try await ann.command("MSG #1001 :line \(n)")
                let last = reply.last ?? ""
                if last.hasPrefix("OK MSG #1001 ") {
                    acknowledged.append("line \(n)")
                } else {
                    #expect(last.hasPrefix("ERR MSG STORAGE_ERROR "), "line \(n): \(last)")
                    #expect(stopped, "line \(n) refused before the server stopped: \(last)")
                    refused += 1
                    // Prompt: within the request timeout and a margin, not a hang.
                    #expect(ContinuousClock.now - started < .seconds(6), "line \(n) took \(ContinuousClock.now - started)")
                    if restarted { try await Task.sleep(for: .milliseconds(300)) }
                }
            }
            #expect(refused > 0)
            // After the restart the nodes reconnected by themselves: the last lines went through.
            #expect(acknowledged.last == "line 30")
            // Stored once each, in the order acknowledged.
            let history = try await ann.command("HISTORY #1001 100")
            let texts = history.filter { $0.hasPrefix("RPL HISTORY ") }.compactMap { $0.components(separatedBy: " :").last }
            #expect(texts == acknowledged)
            // Numbered without a gap: a refused write took no number.
            let msgids: [String] = history.filter { $0.hasPrefix("RPL HISTORY ") }.map { String($0.split(separator: " ")[3]) }
            let expected: [String] = (1...acknowledged.count).map { String($0) }
            #expect(msgids == expected)
            // B pushed each acknowledged message once, in order (those committed while its
            // listener was away come from its catch-up read).
            var pushed: [String] = []
            while pushed.count < acknowledged.count {
                let line = try await amy.expectLine(startingWith: "EVENT TICKET #1001 ", timeout: .seconds(15))
                pushed.append(line.components(separatedBy: " :").last ?? "")
            }
            #expect(pushed == acknowledged)
            #expect(try await amy.command("PING z") == ["OK PING :z"])
            await ann.close()
            await amy.close()
        } catch {
            await a.stop()
            await b.stop()
            await cluster.remove()
            throw error
        }
        await a.stop()
        await b.stop()
        await cluster.remove()
    }
}

/// `deskline serve` processes on one schema of the test PostgreSQL.
struct NodeProcesses {
    let settings: PostgresSettings
    let directory: String

    /// A fresh schema, seeded as ``TestServer``'s data.
    static func make() async throws -> NodeProcesses {
        let postgres = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(postgres)
        let store = PostgresStore(client: postgres.client, settings: settings, logger: TestPostgres.logger)
        let pool = PasswordWorkPool(concurrency: 1, queueLimit: 64)
        try await TestServer.seed(AccountService(store: store, hasher: PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)),
                                                 passwordWork: pool))
        await pool.shutdown()
        let directory = NSTemporaryDirectory() + "deskline-nodes-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = """
            {"listen": {"host": "127.0.0.1", "port": 0}, "hugePages": false, "passwordHashing": {"scryptN": 1024},
             "limits": {"loginFailureDelayMilliseconds": 0},
             "storage": {"backend": "postgres", "postgres": {"port": \(settings.port), "passwordFile": "\(settings.passwordFile ?? "")",
                         "tls": "disable", "schema": "\(settings.schema)"}}}
            """
        try Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/config.json"))
        return NodeProcesses(settings: settings, directory: directory)
    }

    /// Starts a node; returns it with its port once it listens.
    func start() async throws -> (CLIProcess, Int) {
        let node = try CLIProcess(["serve", "--config", directory + "/config.json"])
        #expect(await node.waitForOutput("listening on"), "the node did not start: \(node.stderr)")
        let line = try #require(node.stdout.split(separator: "\n").first { $0.contains("listening on 127.0.0.1:") })
        let port = try #require(Int(line.components(separatedBy: "127.0.0.1:")[1].prefix { $0.isNumber }))
        return (node, port)
    }
}

struct NodeKillTests {
    /// Node A is killed with SIGKILL in the middle of a customer's pipelined burst: every
    /// message it acknowledged is stored once (the customer reconnects to node B and reads them
    /// back), numbers have no gap, node B pushed every stored message once and in order to the
    /// agent on it, and B goes on serving as if nothing happened.
    @Test func aNodeKilledMidBurstLosesNothingAcknowledgedAndTheOtherNeverNotices() async throws {
        let nodes = try await NodeProcesses.make()
        let (a, portA) = try await nodes.start()
        let (b, portB) = try await nodes.start()
        defer {
            a.process.terminate()
            b.process.terminate()
        }
        func login(_ email: String, _ port: Int) async throws -> TestClient {
            let client = try await TestClient.connect(port: port)
            _ = try await client.readLine()
            try await client.send("LOGIN \(email) \(TestServer.password)")
            #expect(try await client.readLine()?.hasPrefix("OK LOGIN ") == true)
            return client
        }
        let amy = try await login("amy@acme.test", portB)
        let ann = try await login("ann@acme.test", portA)
        #expect(try await ann.command("NEW :Kill test").last?.hasPrefix("OK NEW #1001 ") == true)
        let burst = 300
        for n in 1...burst { try await ann.send("MSG #1001 :line \(n)") }
        var acknowledged: [String] = []
        while acknowledged.count < 40, let line = try await ann.readLine() {
            if line.hasPrefix("OK MSG #1001 ") { acknowledged.append(line) }
        }
        kill(a.process.processIdentifier, SIGKILL)
        // What A acknowledged before it died (the rest of the burst got no answer).
        while let line = try? await ann.readLine(timeout: .seconds(3)) {
            if line.hasPrefix("OK MSG #1001 ") { acknowledged.append(line) }
        }
        #expect(acknowledged.count >= 40 && acknowledged.count < burst)
        _ = await a.wait()

        // The customer reconnects to B and finds every acknowledged message, once.
        let annAgain = try await login("ann@acme.test", portB)
        var history: [String] = []
        while true {
            let after = history.last.map { String($0.split(separator: " ")[3]) } ?? "0"
            let page = try await annAgain.command("HISTORY #1001 after \(after) 100").filter { $0.hasPrefix("RPL HISTORY ") }
            history += page
            if page.count < 100 { break }
        }
        let stored: [String] = history.compactMap { $0.components(separatedBy: " :").last }
        let storedIds: [String] = history.map { String($0.split(separator: " ")[3]) }
        try #require(stored.count >= acknowledged.count)
        #expect(storedIds == (1...stored.count).map { String($0) })
        #expect(Set(stored).count == stored.count)
        // Acknowledged ones in the order they were sent: the first n stored.
        let acknowledgedTexts: [String] = acknowledged.map { line in
            "line " + String(line.split(separator: " ")[3])
        }
        #expect(Array(stored.prefix(acknowledgedTexts.count)) == acknowledgedTexts)
        #expect(stored == (1...stored.count).map { "line \($0)" })

        // B pushed every stored message to Amy, once, in order.
        var pushed: [String] = []
        while pushed.count < stored.count {
            let line = try await amy.expectLine(startingWith: "EVENT TICKET #1001 ", timeout: .seconds(15))
            pushed.append(line.components(separatedBy: " :").last ?? "")
        }
        #expect(pushed == stored)
        #expect(try await amy.command("PING k") == ["OK PING :k"])
        #expect(try await annAgain.command("MSG #1001 :after").last?.hasPrefix("OK MSG #1001 \(stored.count + 1) ") == true)
        await amy.close()
        await annAgain.close()
        await ann.close()
        b.process.terminate()
        #expect(await b.wait().status == 0)
    }
}

struct PostgresCLITests {
    /// `serve` refuses a schema that is missing, with the command to run; `migrate` creates it
    /// (and a second run does nothing); an unreachable server is named with PostgreSQL's reason.
    @Test func serveRefusesAMissingSchemaAndMigrateCreatesIt() async throws {
        let postgres = try await TestPostgres.server()
        let directory = NSTemporaryDirectory() + "deskline-migrate-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let schema = "m_" + UUID().uuidString.prefix(8).lowercased()
        func write(port: Int) throws {
            try Data("""
                {"listen": {"host": "127.0.0.1", "port": 0}, "hugePages": false,
                 "storage": {"backend": "postgres", "postgres": {"port": \(port), "passwordFile": "\(postgres.settings.passwordFile ?? "")",
                             "tls": "disable", "schema": "\(schema)", "connectTimeoutSeconds": 2}}}
                """.utf8).write(to: URL(fileURLWithPath: directory + "/config.json"))
        }
        try write(port: postgres.settings.port)
        let config = directory + "/config.json"
        let refused = try await CLIProcess.run(["serve", "--config", config])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("has no Deskline schema in '\(schema)': run `deskline migrate` first"), "\(refused.stderr)")
        let migrated = try await CLIProcess.run(["migrate", "--config", config])
        #expect(migrated.status == 0)
        #expect(migrated.stdout.contains("Applied migration 1: "))
        #expect(migrated.stdout.contains("is now at version \(Schema.current)"))
        let again = try await CLIProcess.run(["migrate", "--config", config])
        #expect(again.stdout.contains("already at version \(Schema.current); nothing to do"))
        let tenant = try await CLIProcess.run(["tenant", "add", "initech", "--name", "Initech", "--config", config])
        #expect(tenant.stdout.contains("created tenant initech"), "\(tenant.stderr)")

        // Nothing listens on this port.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let freePort = Int(UInt16(bigEndian: address.sin_port))
        close(listener)
        try write(port: freePort)
        let unreachable = try await CLIProcess.run(["serve", "--config", config])
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.contains("storage.postgres: cannot connect to PostgreSQL at 127.0.0.1:\(freePort)/deskline as deskline"),
                "\(unreachable.stderr)")
    }
}
