import ArgumentParser
import DesklineCore
import DesklineGateway
import DesklineStore
import Foundation
import Logging

/// Where the data lives: `--config` (default ./config.json) or `--data` to name the directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the config file (default: ./config.json).")
    var config: String?

    @Option(name: .long, help: "Data directory (overrides the config file's dataDirectory).")
    var data: String?

    /// A config file named with --config must exist. Without --config, ./config.json is used
    /// if present; with only --data, the built-in defaults are used.
    func loadConfiguration() throws -> GatewayConfiguration {
        var configuration: GatewayConfiguration
        if let config {
            configuration = try GatewayConfiguration.load(path: config)
        } else if FileManager.default.fileExists(atPath: "config.json") {
            configuration = try GatewayConfiguration.load(path: "config.json")
        } else if data != nil {
            configuration = GatewayConfiguration()
        } else {
            throw CLIError("no config.json in the current directory; pass --config PATH or --data DIR")
        }
        if let data { configuration.dataDirectory = data }
        return configuration
    }
}

/// A failure to report as `Error: <text>` and exit 1, without the usage text.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What an admin command needs: the store and the account service over it.
struct AdminContext {
    /// The admin commands read and write through the `Store` port, like the server; only the
    /// file store's own questions (is a server running on it?) go to `files`.
    let store: any Store
    /// The file store (nil on PostgreSQL).
    let files: FileStore?
    /// PostgreSQL's client (nil on the file store), closed by ``finish(_:changed:whenServing:)``.
    let postgres: PostgresBackend?
    let accounts: AccountService
    let pool: PasswordWorkPool

    /// Opens the store config.json names. Only commands that create the first tenant may create
    /// a data directory.
    static func open(_ options: DataOptions, create: Bool = false) async throws -> AdminContext {
        let configuration = try options.loadConfiguration()
        let pool = PasswordWorkPool(concurrency: 1, queueLimit: 1)
        let store: any Store
        var files: FileStore?
        var postgres: PostgresBackend?
        switch configuration.storage.backend {
        case .files:
            files = try await FileStore(root: configuration.dataDirectory, create: create)
            store = files!
        case .postgres:
            var logger = Logger(label: "deskline.store")
            logger.logLevel = .warning
            postgres = try await PostgresBackend.open(configuration.storage.postgres, logger: logger)
            store = postgres!.store
        }
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: configuration.passwordHashing),
                                      passwordWork: pool)
        return AdminContext(store: store, files: files, postgres: postgres, accounts: accounts, pool: pool)
    }

    /// What a running server makes of an admin change (admin writes take the data directory's
    /// account lock, so they are safe while it runs).
    static let seenAtOnce = "the change is already visible to it."

    /// Prints the result, and for changes `whenServing` if a server is running.
    func finish(_ message: String, changed: Bool = true, whenServing: String = AdminContext.seenAtOnce) async {
        if !message.isEmpty { print(message) }
        if changed, let files, await files.isServerRunning() {
            print("note: a Deskline server is running on \(files.root); \(whenServing)")
        }
        postgres?.close()
        await pool.shutdown()
    }
}

extension Role: ExpressibleByArgument {}
