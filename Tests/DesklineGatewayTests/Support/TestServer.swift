import DesklineCore
import DesklineGateway
import DesklineStore
import Foundation
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import Testing

/// A real server on 127.0.0.1, port 0, over a fresh data directory, with one tenant `acme`
/// (customer Ann c1/u1, agent Amy u2, admin Ada u3, customer Bob c2/u4, agent Abe u5) and one
/// tenant `globex` (customer Gus c1/u1, agent Gia u2, admin Gil u3). Passwords use a cheap scrypt cost; everything else is production code.
struct TestServer {
    static let password = "correct horse battery"

    let server: GatewayServer
    let port: Int
    /// The TLS listener's port, when the configuration enables it.
    let tlsPort: Int?
    /// The IRC listener's port.
    var ircPort: Int? { server.address(.irc, tls: false)?.port }
    let accounts: AccountService
    let store: FileStore
    let root: String
    private let runTask: Task<Void, any Error>
    /// The server's password checks (tests wait for checks to be under way).
    let pool: PasswordWorkPool

    /// Starts a server; with `root` of an earlier server (and `seed: false`) it restarts on that data.
    /// `logger`: the server's log (default: nothing below critical).
    static func start(root existing: String? = nil, seed: Bool = true, logger: Logger? = nil,
                      configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> TestServer {
        let root = existing ?? NSTemporaryDirectory() + "deskline-gw-" + UUID().uuidString
        var config = GatewayConfiguration()
        config.listen.port = 0
        config.tls.port = 0
        config.irc.enabled = true
        config.irc.port = 0
        config.irc.tlsPort = 0
        config.dataDirectory = root
        config.passwordHashing = PasswordHashingCost(n: 1024, r: 8, p: 1)
        // Failed logins are answered at once here (LoginTests checks the delay itself).
        config.limits.loginFailureDelayMilliseconds = 0
        configure(&config)
        let store = try await FileStore(root: root)
        let pool = PasswordWorkPool(concurrency: config.limits.passwordCheckConcurrency, queueLimit: config.limits.passwordCheckQueue)
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: config.passwordHashing), passwordWork: pool)
        if seed { try await Self.seed(accounts) }
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        let logger = logger ?? quiet
        let server = GatewayServer(configuration: config, services: .make(store: store, accounts: accounts, limits: config.limits), logger: logger,
                                   shutdownGracePeriod: .milliseconds(500), lingerTime: .milliseconds(500))
        let port = try await server.bind().port!
        let task = Task { try await server.run() }
        return TestServer(server: server, port: port, tlsPort: server.tlsAddress?.port, accounts: accounts, store: store, root: root,
                          runTask: task, pool: pool)
    }

    static func seed(_ accounts: AccountService) async throws {
        let acme = try await accounts.createTenant(id: "acme", name: "Acme Inc").id
        let ann = try await accounts.createCustomer(in: acme, name: "Ann Customer", email: "ann@acme.test", phone: "+1 555 0101")
        _ = try await accounts.createUser(in: acme, email: "ann@acme.test", displayName: nil, role: .customer, customer: ann.id, password: password)
        _ = try await accounts.createUser(in: acme, email: "amy@acme.test", displayName: "Amy Agent", role: .agent, customer: nil, password: password)
        _ = try await accounts.createUser(in: acme, email: "ada@acme.test", displayName: "Ada Admin", role: .admin, customer: nil, password: password)
        let bob = try await accounts.createCustomer(in: acme, name: "Bob Other", email: "bob@acme.test", phone: "+1 555 0102")
        _ = try await accounts.createUser(in: acme, email: "bob@acme.test", displayName: nil, role: .customer, customer: bob.id, password: password)
        _ = try await accounts.createUser(in: acme, email: "abe@acme.test", displayName: "Abe Agent", role: .agent, customer: nil, password: password)
        let globex = try await accounts.createTenant(id: "globex", name: "Globex").id
        let gus = try await accounts.createCustomer(in: globex, name: "Gus", email: "gus@globex.test", phone: nil)
        _ = try await accounts.createUser(in: globex, email: "gus@globex.test", displayName: nil, role: .customer, customer: gus.id, password: password)
        _ = try await accounts.createUser(in: globex, email: "gia@globex.test", displayName: "Gia Agent", role: .agent, customer: nil, password: password)
        _ = try await accounts.createUser(in: globex, email: "gil@globex.test", displayName: "Gil Admin", role: .admin, customer: nil, password: password)
    }

    /// A plaintext connection; with `tls`, a TLS connection to the TLS listener instead.
    func connect(tls: NIOSSLContext? = nil) async throws -> TestClient {
        guard let tls else { return try await TestClient.connect(port: port) }
        return try await TestClient.connect(port: try #require(tlsPort, "the server has no TLS listener"), tls: tls)
    }

    /// A connected client that has read the greeting (not logged in).
    func guest(tls: NIOSSLContext? = nil) async throws -> TestClient {
        let client = try await connect(tls: tls)
        _ = try await client.readLine()
        return client
    }

    /// A connected client that has read the greeting and logged in.
    func login(_ email: String, password: String = TestServer.password, tls: NIOSSLContext? = nil) async throws -> TestClient {
        let client = try await guest(tls: tls)
        try await client.send("LOGIN \(email) \(password)")
        let reply = try #require(try await client.readLine())
        #expect(reply.hasPrefix("OK LOGIN "), "login of \(email): \(reply)")
        return client
    }

    /// Stops the server and deletes its data.
    func stop() async throws {
        try await stopKeepingData()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Stops the server; its data directory stays for a restart.
    func stopKeepingData() async throws {
        server.shutdown()
        try await runTask.value
        await pool.shutdown()
    }
}

/// Runs `body` against a fresh server and always stops it.
func withServer(logger: Logger? = nil, configure: (inout GatewayConfiguration) -> Void = { _ in },
                _ body: (TestServer) async throws -> Void) async throws {
    let server = try await TestServer.start(logger: logger, configure: configure)
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}
