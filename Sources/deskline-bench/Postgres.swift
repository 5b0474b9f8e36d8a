import DesklinePostgres
import Foundation
import Logging
import PostgresNIO

/// A throwaway PostgreSQL cluster for a benchmark, started with `Scripts/postgres-dev` (which
/// prints the settings to use), with Deskline's schema created by `deskline migrate` as an
/// operator would.
struct BenchPostgres: Sendable {
    /// The cluster's directory (`Scripts/postgres-dev start DIR`).
    let directory: String
    let script: String
    /// Where the script's and the migration's chatter goes.
    let log: String
    let settings: PostgresSettings

    /// Starts a cluster in `directory` (created if needed). `script`: Scripts/postgres-dev, by
    /// default the one in the working directory or the repository this benchmark was built in.
    static func start(in directory: String, script: String?) async throws -> BenchPostgres {
        let script = script ?? Self.defaultScript()
        guard FileManager.default.isExecutableFile(atPath: script) else { throw BenchError("no Scripts/postgres-dev at \(script) (--postgres-dev)") }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let log = directory + ".log"
        let output = try await runProgram(script, ["start", directory], log: log)
        var settings = PostgresSettings()
        settings.tls = .disable
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "host": settings.host = parts[1]
            case "port": settings.port = Int(parts[1]) ?? 0
            case "database": settings.database = parts[1]
            case "user": settings.user = parts[1]
            case "passwordFile": settings.passwordFile = parts[1]
            default: break
            }
        }
        guard settings.passwordFile != nil, (1...65535).contains(settings.port) else {
            throw BenchError("\(script) start printed no settings:\n\(output)")
        }
        return BenchPostgres(directory: directory, script: script, log: log, settings: settings)
    }

    /// Scripts/postgres-dev in the working directory (the scripts run from the repository), else
    /// the one of the repository whose `.build/<configuration>/` holds this benchmark.
    static func defaultScript() -> String {
        let here = FileManager.default.currentDirectoryPath + "/Scripts/postgres-dev"
        if FileManager.default.isExecutableFile(atPath: here) { return here }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("../../Scripts/postgres-dev").standardizedFileURL.path
    }

    /// `storage` of a `deskline serve` config.json for this cluster.
    var storage: [String: Any] {
        var postgres: [String: Any] = ["host": settings.host, "port": settings.port, "database": settings.database,
                                       "user": settings.user, "tls": "disable"]
        postgres["passwordFile"] = settings.passwordFile
        return ["backend": "postgres", "postgres": postgres]
    }

    /// Runs `deskline migrate` with a config.json in `work` that names this cluster.
    func migrate(binary: String, work: String) async throws {
        let config = try ServerRun.writeConfig(work: work, storage: storage)
        let output = try await runProgram(binary, ["migrate", "--config", config], log: log)
        for line in output.split(separator: "\n") { say("  \(line)") }
    }

    /// A ``PostgresStore`` on the cluster and its running client.
    struct Connected: Sendable {
        let store: PostgresStore
        let client: PostgresClient
        let runner: Task<Void, Never>

        /// Stops the client (its connections close).
        func close() async {
            runner.cancel()
            await runner.value
        }
    }

    /// A ``PostgresStore`` on the cluster with its client running, as a node has (its pool size;
    /// timeouts long enough that a slow moment of a long fill is not an error). The store's own
    /// `run()` (other nodes' events, presence) is not started: the benchmark writes, it serves
    /// nobody.
    func connect() throws -> Connected {
        var settings = self.settings
        settings.requestTimeoutSeconds = 60
        settings.statementTimeoutSeconds = 60
        var logger = Logger(label: "deskline-bench.postgres")
        logger.logLevel = .warning
        let client = PostgresClient(configuration: settings.clientConfiguration(password: try settings.password(), connections: settings.poolSize + 1),
                                    backgroundLogger: logger)
        let runner = Task { await client.run() }
        return Connected(store: PostgresStore(client: client, settings: settings, logger: logger), client: client, runner: runner)
    }

    /// Runs `body` with a store on the cluster (``connect()``), closed afterwards.
    func withStore<T: Sendable>(_ body: @Sendable (PostgresStore) async throws -> T) async throws -> T {
        let connected = try connect()
        do {
            let value = try await body(connected.store)
            await connected.close()
            return value
        } catch {
            await connected.close()
            throw error
        }
    }

    /// Runs `query` (which returns one row of one `bigint`) on a connection of `client` that sees
    /// every tenant's rows (`deskline.tenant` `*`, the store's own setting for reads across
    /// tenants), without a statement timeout.
    static func count(_ client: PostgresClient, _ query: PostgresQuery) async throws -> [Int] {
        try await client.withConnection { connection in
            var logger = Logger(label: "deskline-bench.postgres")
            logger.logLevel = .warning
            _ = try await connection.query("BEGIN", logger: logger)
            do {
                _ = try await connection.query("SELECT set_config('deskline.tenant', '*', true), set_config('statement_timeout', '0', true)", logger: logger)
                var values: [Int] = []
                for try await row in try await connection.query(query, logger: logger) {
                    for cell in row { values.append(try cell.decode(Int.self)) }
                }
                _ = try await connection.query("COMMIT", logger: logger)
                return values
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// Stops the cluster (its files stay in `directory`).
    func stop() async {
        do {
            try await runProgram(script, ["stop", directory], log: log)
        } catch {
            say("warning: could not stop PostgreSQL in \(directory): \(error)")
        }
    }
}

/// Runs a program to its end, on a thread of its own (it may take seconds: initdb, a server
/// start), and returns its standard output; its standard error is appended to `log`. Throws, with
/// the output and the log's path, if it fails.
@discardableResult
func runProgram(_ path: String, _ arguments: [String], log: String) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try runProgramBlocking(path, arguments, log: log) }) }
    }
}

/// ``runProgram(_:_:log:)`` on the calling thread. posix_spawn and waitpid, as TestPostgres
/// does, not Foundation's Process: Process learns of a child's exit from a socket the child
/// inherits, and a server the child starts in the background (pg_ctl) inherits it too, so Process
/// would wait for as long as that server runs. The child gets no other descriptor of this
/// process either, and writes its output to a file (no pipe a background server could hold open).
private func runProgramBlocking(_ path: String, _ arguments: [String], log: String) throws -> String {
    let outputFile = log + ".stdout"
    defer { try? FileManager.default.removeItem(atPath: outputFile) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    // (glibc ignores a close of a descriptor that is not open.)
    let highest = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }.max() ?? 1023
    for descriptor in Int32(3)...max(3, highest) { posix_spawn_file_actions_addclose(&actions, descriptor) }
    var cArguments = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for argument in cArguments { free(argument) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, &cArguments, environ)
    guard spawned == 0 else { throw BenchError("cannot run \(path): \(String(cString: strerror(spawned)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let output = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
    guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
        throw BenchError("\(path) \(arguments.joined(separator: " ")) failed (wait status \(status); its errors are in \(log)):\n\(output)")
    }
    return output
}
