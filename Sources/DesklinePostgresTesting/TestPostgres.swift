import DesklineCore
import DesklinePostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The PostgreSQL server the tests use, started once per test process: the cluster in the
/// directory `DESKLINE_TEST_POSTGRES` names (`.ci/run` starts one), else one in
/// `.build/test-postgres` that `Scripts/postgres-dev` creates (or reuses) and this process stops
/// when it exits. No PostgreSQL, no pass: the tests that need it fail with the reason.
public enum TestPostgres {
    public struct Server: Sendable {
        public let settings: PostgresSettings
        public let password: String
        public let client: PostgresClient
        /// Whether this process started the server (no other test run is using it).
        let startedHere: Bool
    }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    private static let shared = Mutex<Task<Server, any Error>?>(nil)

    /// The server (started on first use) and a client on it that runs for the process's life.
    public static func server() async throws -> Server {
        let task = shared.withLock { shared in
            if let task = shared { return task }
            let task = Task { try await started() }
            shared = task
            return task
        }
        return try await task.value
    }

    /// The server, after dropping the schemas earlier runs' tests left (`t_…`, `m_…`) when this
    /// process started it (so no other run is using them).
    private static func started() async throws -> Server {
        // Off the cooperative pool: starting the server blocks for a second or two.
        let server = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Server, any Error>) in
            Thread.detachNewThread { continuation.resume(with: Result { try start() }) }
        }
        if server.startedHere {
            _ = try await server.client.withConnection { connection in
                let rows = try await connection.query("SELECT nspname FROM pg_namespace WHERE nspname ~ '^[tm]_[0-9a-z_]+$'", logger: logger)
                    .collect()
                for row in rows {
                    let name = try row.decode(String.self)
                    _ = try await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(name) CASCADE"), logger: logger).collect()
                }
            }
        }
        return server
    }

    private static func start() throws -> Server {
        let environment = ProcessInfo.processInfo.environment
        let directory = environment["DESKLINE_TEST_POSTGRES"] ?? packageRoot + "/.build/test-postgres"
        let wasRunning = try run(["status", directory]) == 0
        guard try run(["start", directory]) == 0 else {
            throw DesklineError.storage("Scripts/postgres-dev could not start PostgreSQL in \(directory) (see \(directory)/postgres.log)")
        }
        if !wasRunning && environment["DESKLINE_TEST_POSTGRES"] == nil {
            atexit { _ = try? TestPostgres.run(["stop", TestPostgres.packageRoot + "/.build/test-postgres"]) }
        }
        var settings = PostgresSettings()
        let port = try String(contentsOfFile: directory + "/port", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        settings.port = Int(port) ?? 0
        settings.passwordFile = directory + "/password"
        settings.tls = .disable
        // Shared by every test in the process, some of which hold a connection for seconds
        // (a row lock they keep to stall a write): room for those and the rest.
        settings.poolSize = 24
        // The tests' stores wait longer than a server's 5 s: a full run on two cores has moments
        // where a transaction takes seconds (CI once failed ten conformance tests at once at
        // 5 s). Tests of the timeout itself set their own.
        settings.requestTimeoutSeconds = 20
        let password = try settings.password() ?? ""
        let client = PostgresClient(configuration: settings.clientConfiguration(password: password, connections: settings.poolSize))
        Task.detached { await client.run() }
        let server = Server(settings: settings, password: password, client: client, startedHere: !wasRunning)
        return server
    }

    /// Warnings and errors only (a migration per test store would log otherwise).
    public static let logger: Logger = {
        var logger = Logger(label: "test-postgres")
        logger.logLevel = .warning
        return logger
    }()

    /// Runs `Scripts/postgres-dev` with `arguments` (its messages to stderr) and waits for it; its
    /// exit status. (posix_spawn and waitpid: Foundation's Process did not always see the exit
    /// here.) In a session of its own: the server it starts must not get this process's signals.
    @discardableResult
    static func run(_ arguments: [String]) throws -> Int32 {
        let argv = ["/usr/bin/setsid", "--wait", packageRoot + "/Scripts/postgres-dev"] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, environ)
        guard spawned == 0 else { throw DesklineError.storage("cannot run Scripts/postgres-dev: \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// ``run(_:)`` on a thread of its own: it blocks for seconds (initdb, a server start).
    static func runAside(_ arguments: [String]) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try run(arguments) }) }
        }
    }

    /// Settings for a new, empty schema of its own, migrated to the current version.
    public static func freshSchema(_ server: Server) async throws -> PostgresSettings {
        var settings = server.settings
        settings.schema = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        _ = try await server.client.withConnection { connection in
            try await Schema.migrate(connection, schema: settings.schema, logger: logger)
        }
        return settings
    }

    /// A new store on a fresh schema.
    public static func store() async throws -> PostgresStore {
        let server = try await server()
        let settings = try await freshSchema(server)
        return PostgresStore(client: server.client, settings: settings, logger: logger)
    }
}

/// A PostgreSQL cluster of one test's own, in a fresh directory, for tests that stop and start
/// the server (the shared one serves every other test meanwhile).
public struct PrivateCluster: Sendable {
    public let directory: String
    public let settings: PostgresSettings
    public let password: String

    /// Creates and starts a cluster (a few seconds: initdb) with the current schema in `public`.
    public static func start() async throws -> PrivateCluster {
        let directory = NSTemporaryDirectory() + "deskline-pg-" + UUID().uuidString.prefix(8).lowercased()
        guard try await TestPostgres.runAside(["start", directory]) == 0 else {
            throw DesklineError.storage("Scripts/postgres-dev could not start PostgreSQL in \(directory)")
        }
        var settings = PostgresSettings()
        let port = try String(contentsOfFile: directory + "/port", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        settings.port = Int(port) ?? 0
        settings.passwordFile = directory + "/password"
        settings.tls = .disable
        let password = try settings.password() ?? ""
        _ = try await settings.migrate(password: password, logger: TestPostgres.logger)
        return PrivateCluster(directory: directory, settings: settings, password: password)
    }

    /// Stops the server (fast: open transactions are rolled back, connections closed).
    public func stopServer() async throws {
        guard try await TestPostgres.runAside(["stop", directory]) == 0 else { throw DesklineError.storage("the test cluster did not stop") }
    }

    /// Starts it again on the same port.
    public func startServer() async throws {
        guard try await TestPostgres.runAside(["start", directory]) == 0 else { throw DesklineError.storage("the test cluster did not start") }
    }

    /// Stops the server and deletes the cluster.
    public func remove() async {
        _ = try? await stopServer()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
