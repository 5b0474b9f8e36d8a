import ArgumentParser
import DesklineCore
import DesklinePostgres
import DesklineGateway
import DesklineStore
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

extension Deskline {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the server until SIGINT or SIGTERM.")

        @OptionGroup var options: DataOptions

        @Flag(help: "On an empty data directory, create a demo tenant with a customer, an agent and an admin, and print their logins.")
        var demo = false

        func run() async throws {
            let configuration = try options.loadConfiguration()
            if configuration.hugePages { HugePages.restartWithHugePages() }
            // Unusable TLS files stop the start before the data directory is touched (bind() reads
            // them again).
            if configuration.tls.enabled { _ = try configuration.tls.makeServerContext() }
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = configuration.logLevel
                return handler
            }
            let logger = Logger(label: "deskline")
            switch configuration.storage.backend {
            case .files: try await serveOnFiles(configuration, logger: logger)
            case .postgres: try await serveOnPostgres(configuration, logger: logger)
            }
        }

        /// Serves from the data directory, which this process locks for itself.
        private func serveOnFiles(_ configuration: GatewayConfiguration, logger: Logger) async throws {
            // The store's own threads: its work mostly waits for the disk, so it gets more
            // threads than cores, and tenants' writers and readers do not queue behind each other.
            let storeThreadCount = 16
            // Each connection is an open file, and so is each log the busy tenants' writers keep
            // open between batches, plus a margin for the rest: the logs a running batch has open
            // (one per log its jobs touch) and one journal per tenant that has written.
            let neededFiles = configuration.limits.maxConnections + FileStore.logsKeptOpen + storeThreadCount + 200
            raiseOpenFilesLimit(needed: neededFiles, logger: logger)
            let storeThreads = NIOThreadPool(numberOfThreads: storeThreadCount)
            storeThreads.start()
            let store = try await FileStore(root: configuration.dataDirectory, threadPool: storeThreads,
                                            groupCommitInterval: .milliseconds(configuration.storage.groupCommitIntervalMilliseconds),
                                            logger: Logger(label: "deskline.store"))
            let serverLock = try await store.lockForServer(pid: getpid())
            var stoppedCleanly = false
            defer { serverLock.release(clean: stoppedCleanly) }
            // After an unclean stop, each tenant is checked before its first write; this walks
            // the tenants nobody uses yet, without delaying the start (docs/STORAGE.md).
            let recovery = Task { await store.recoverAllTenants() }
            defer { recovery.cancel() }
            try await serve(configuration, store: store, dataIn: store.root, demoFile: store.root + "/demo-credentials.txt",
                            services: [], logger: logger)
            await recovery.value
            let written = await store.waitUntilWritesFinish()
            let synced = await store.checkpointAll()
            stoppedCleanly = written && synced && !store.recoveryIncomplete
            try? await storeThreads.shutdownGracefully()
        }

        /// Serves from PostgreSQL, as one node of as many as share the database: the store's
        /// `run()` brings the other nodes' events.
        private func serveOnPostgres(_ configuration: GatewayConfiguration, logger: Logger) async throws {
            raiseOpenFilesLimit(needed: configuration.limits.maxConnections + configuration.storage.postgres.poolSize + 200, logger: logger)
            let settings = configuration.storage.postgres
            let backend = try await PostgresBackend.open(settings, logger: Logger(label: "deskline.store"))
            defer { backend.close() }
            try await serve(configuration, store: backend.store,
                            dataIn: "PostgreSQL at \(settings.serverDescription) (schema '\(settings.schema)')", demoFile: nil,
                            services: [backend.store], logger: logger)
        }

        private func raiseOpenFilesLimit(needed: Int, logger: Logger) {
            if let files = OpenFilesLimit.raiseToHardLimit(), files < UInt64(needed) {
                logger.warning("the open-files limit is below what limits.maxConnections can need; raise it (ulimit -n, LimitNOFILE=)",
                               metadata: ["limit": "\(files)", "needed": "\(needed)"])
            }
        }

        /// Runs the gateway on `store` (with `services` beside it) until SIGINT or SIGTERM.
        private func serve(_ configuration: GatewayConfiguration, store: any Store, dataIn: String, demoFile: String?,
                           services: [any Service], logger: Logger) async throws {
            let pool = PasswordWorkPool(concurrency: configuration.limits.passwordCheckConcurrency,
                                        queueLimit: configuration.limits.passwordCheckQueue)
            let accounts = AccountService(store: store, hasher: PasswordHasher(cost: configuration.passwordHashing),
                                          passwordWork: pool)
            if demo { try await seedDemo(accounts, savingTo: demoFile) }

            let server = GatewayServer(configuration: configuration, services: .make(store: store, accounts: accounts, limits: configuration.limits),
                                       logger: logger)
            // A port that cannot be bound (ListenError) or unusable TLS files (ConfigurationError)
            // are reported as they are: both name the config keys.
            let address = try await server.bind()
            let host = address.ipAddress ?? configuration.listen.host
            let port = address.port ?? configuration.listen.port
            var listening = ["Deskline \(DesklineVersion.current) listening on \(host):\(port), data in \(dataIn)"]
            var connect = ["Connect with: nc \(host) \(port)    (stop the server with Ctrl-C)"]
            if let tls = server.tlsAddress {
                let tlsHost = tls.ipAddress ?? configuration.tls.host
                let tlsPort = tls.port ?? configuration.tls.port
                let login = configuration.tls.requireTLSForLogin ? " (LOGIN only over TLS)" : ""
                listening.append("Deskline \(DesklineVersion.current) listening for TLS on \(tlsHost):\(tlsPort)\(login)")
                connect.append("Connect over TLS with: openssl s_client -connect \(tlsHost):\(tlsPort) -quiet")
            }
            if let irc = server.address(.irc, tls: false) {
                let ircHost = irc.ipAddress ?? configuration.irc.host
                let ircPort = irc.port ?? configuration.irc.port
                listening.append("Deskline \(DesklineVersion.current) listening for IRC clients on \(ircHost):\(ircPort)"
                                 + (server.address(.irc, tls: true)?.port.map { ", with TLS on \(ircHost):\($0)" } ?? ""))
                connect.append("Connect an IRC client with: /connect \(ircHost) \(ircPort) <email>:<password>    (docs/IRC.md)")
            }
            let banner = Banner(text: (listening + connect).joined(separator: "\n"))
            let group = ServiceGroup(services: services + [server, banner], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
            await pool.shutdown()
        }

        /// Creates the demo tenant on an empty store and prints its logins. The file store keeps
        /// them in `demo-credentials.txt` (mode 0600) in the data directory (`file`), so a later
        /// `--demo` run can show them again.
        private func seedDemo(_ accounts: AccountService, savingTo file: String?) async throws {
            if let credentials = try await DemoData.seedIfEmpty(accounts) {
                var text = "Demo tenant '\(DemoData.tenantID)' (Demo Company) - logins as generated:\n"
                for c in credentials {
                    text += "  \(c.role.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) LOGIN \(c.email) \(c.password)\n"
                }
                if let file, !FileManager.default.createFile(atPath: file, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) {
                    print("warning: could not save the demo logins to \(file)")
                }
                print(text, terminator: "")
            } else if let file, let saved = FileManager.default.contents(atPath: file) {
                print("The data directory already has data; the demo was created earlier.")
                print(String(decoding: saved, as: UTF8.self), terminator: "")
            } else {
                print("The store already has tenants; --demo creates demo data only in an empty one.")
            }
        }
    }
}

/// Prints the "listening" lines once the service group runs, so a script that starts the server
/// and sends SIGTERM as soon as it reads them gets a graceful stop (the group has installed its
/// signal handlers by then), never the default action of the signal.
private struct Banner: Service {
    let text: String

    func run() async throws {
        print(text)
        fflush(nil)
        try? await gracefulShutdown()
    }
}

