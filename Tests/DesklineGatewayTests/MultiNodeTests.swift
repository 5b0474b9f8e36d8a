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

    static func start(_ settings: PostgresSettings, password: String) async throws -> TestNode {
        var config = GatewayConfiguration()
        config.listen.port = 0
        config.irc.enabled = false
        config.passwordHashing = PasswordHashingCost(n: 1024, r: 8, p: 1)
        config.limits.loginFailureDelayMilliseconds = 0
        config.storage.backend = .postgres
        config.storage.postgres = settings
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
    let postgres = try await TestPostgres.server()
    let settings = try await TestPostgres.freshSchema(postgres)
    let a = try await TestNode.start(settings, password: postgres.password)
    let b = try await TestNode.start(settings, password: postgres.password)
    do {
        try await TestServer.seed(a.accounts)
        try await body(a, b)
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
