import DesklineCore
import Foundation
import Logging
import NIOSSL
import PostgresNIO

extension PostgresSettings {
    /// One connection's configuration, as the pool's (``clientConfiguration(password:connections:)``).
    func connectionConfiguration(password: String?) throws -> PostgresConnection.Configuration {
        let tlsSetting: PostgresConnection.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer: .prefer(try NIOSSLContext(configuration: Self.preferTLS))
        case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: user, password: password,
                                                             database: database, tls: tlsSetting)
        configuration.options.connectTimeout = .seconds(Int64(connectTimeoutSeconds))
        configuration.options.additionalStartupParameters = clientConfiguration(password: password, connections: 1)
            .options.additionalStartupParameters
        return configuration
    }

    /// Connects once (no retries, unlike the pool) and runs `body`: how a command finds out at
    /// once, with PostgreSQL's own reason, that the server cannot be reached or refuses the login.
    public func withProbe<T: Sendable>(password: String?, logger: Logger,
                                       _ body: @Sendable (PostgresConnection) async throws -> T) async throws(DesklineError) -> T {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: try connectionConfiguration(password: password),
                                                              id: 0, logger: logger)
        } catch {
            throw .storage("storage.postgres: cannot connect to PostgreSQL at \(serverDescription) as \(user): \(Self.reason(error))")
        }
        do {
            let value = try await body(connection)
            try? await connection.close()
            return value
        } catch {
            try? await connection.close()
            if let error = error as? DesklineError { throw error }
            throw .storage("PostgreSQL at \(serverDescription): \(Self.reason(error))")
        }
    }

    /// The installed schema version, checked against this build's: `storage` with the command
    /// to run when it is missing, older or newer.
    public func checkSchema(password: String?, logger: Logger) async throws(DesklineError) {
        let schema = self.schema
        let installed = try await withProbe(password: password, logger: logger) { connection in
            try await Schema.installedVersion(connection, schema: schema, logger: logger)
        }
        if installed == 0 {
            throw .storage("PostgreSQL at \(serverDescription) has no Deskline schema in '\(schema)': run `deskline migrate` first")
        }
        if installed < Schema.current {
            throw .storage("the Deskline schema in \(serverDescription) '\(schema)' is at version \(installed), older than this build's \(Schema.current): run `deskline migrate`")
        }
        if installed > Schema.current {
            throw .storage("the Deskline schema in \(serverDescription) '\(schema)' is at version \(installed), newer than this build's \(Schema.current): run a newer deskline")
        }
    }

    /// PostgreSQL's reason for a failure, in its own words where it gave some.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return "\(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}

extension PostgresSettings {
    /// Applies the migrations the schema lacks (``Schema/migrate(_:schema:logger:)``); returns
    /// the versions applied.
    public func migrate(password: String?, logger: Logger) async throws(DesklineError) -> [Int] {
        let schema = self.schema
        return try await withProbe(password: password, logger: logger) { connection in
            try await Schema.migrate(connection, schema: schema, logger: logger)
        }
    }
}
