import ArgumentParser
import DesklineCore
import DesklineGateway
import DesklineStore
import Foundation

/// Where the data lives: `--config` (default ./config.json) or `--data` to name the directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the config file.")
    var config = "config.json"

    @Option(name: .long, help: "Data directory (overrides the config file's dataDirectory).")
    var data: String?

    func loadConfiguration() throws -> GatewayConfiguration {
        var configuration: GatewayConfiguration
        if data != nil && !FileManager.default.fileExists(atPath: config) {
            configuration = GatewayConfiguration()
        } else {
            configuration = try GatewayConfiguration.load(path: config)
        }
        if let data { configuration.dataDirectory = data }
        return configuration
    }
}

/// What an admin command needs: the store and the account service over it.
struct AdminContext {
    let store: FileStore
    let accounts: AccountService
    let pool: PasswordWorkPool

    static func open(_ options: DataOptions) async throws -> AdminContext {
        let configuration = try options.loadConfiguration()
        let store = try await FileStore(root: configuration.dataDirectory)
        let pool = PasswordWorkPool(concurrency: 1, queueLimit: 1)
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: configuration.passwordHashing),
                                      passwordWork: pool)
        return AdminContext(store: store, accounts: accounts, pool: pool)
    }

    /// Prints the result, and a note if a server is running: admin writes take the data
    /// directory's account lock, so they are safe, and the server sees them immediately.
    func finish(_ message: String) async {
        print(message)
        if await store.isServerRunning() {
            print("note: a Deskline server is running on \(store.root); the change is already visible to it.")
        }
        await pool.shutdown()
    }
}

extension Role: ExpressibleByArgument {}
