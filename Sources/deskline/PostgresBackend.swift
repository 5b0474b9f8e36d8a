import DesklineCore
import DesklinePostgres
import Logging
import PostgresNIO

/// The PostgreSQL store config.json names (`storage.backend` `postgres`), with its client
/// running, for one command or a server's life.
struct PostgresBackend {
    let client: PostgresClient
    let store: PostgresStore
    private let runner: Task<Void, Never>

    /// Reads the password, checks that the server is reachable and its schema is this build's
    /// (a clear error naming the key, the server or the command to run otherwise), and starts the
    /// client.
    static func open(_ settings: PostgresSettings, logger: Logger) async throws -> PostgresBackend {
        let password = try settings.password()
        try await settings.checkSchema(password: password, logger: logger)
        // One connection more than the pool size: a node's listener keeps one.
        let client = PostgresClient(configuration: settings.clientConfiguration(password: password, connections: settings.poolSize + 1),
                                    backgroundLogger: logger)
        let runner = Task { await client.run() }
        return PostgresBackend(client: client, store: PostgresStore(client: client, settings: settings, logger: logger), runner: runner)
    }

    /// Stops the client (its connections close).
    func close() {
        runner.cancel()
    }
}
