import DesklineCore
import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// How to reach the PostgreSQL server and how to use it: `storage.postgres` in config.json
/// (docs/STORAGE.md, "PostgreSQL"). The password never sits in the config: it is read from a file
/// (`passwordFile`) or an environment variable (`passwordEnvironment`).
public struct PostgresSettings: Sendable, Equatable {
    public enum TLSMode: String, Sendable, Equatable, CaseIterable {
        /// Plain TCP (a server on the same machine or a private network).
        case disable
        /// TLS if the server offers it, else plain.
        case prefer
        /// TLS, with the server's certificate checked against the system's trust roots.
        case require
    }

    public var host = "127.0.0.1"
    public var port = 5432
    public var database = "deskline"
    public var user = "deskline"
    /// A file holding the password (its first line); relative paths are resolved against the
    /// config file's directory.
    public var passwordFile: String?
    /// The name of an environment variable holding the password.
    public var passwordEnvironment: String?
    public var tls = TLSMode.prefer
    /// The schema Deskline's tables live in (several deployments may share one database).
    public var schema = "public"
    /// Most connections this node keeps open for queries (the listener has one more).
    public var poolSize = 10
    /// How long connecting to the server may take.
    public var connectTimeoutSeconds = 5
    /// How long one statement may run on the server (`statement_timeout`).
    public var statementTimeoutSeconds = 3
    /// How long one store call may take in all, waiting for a connection included: past it the
    /// client gets `STORAGE_ERROR` (so a stopped server never hangs a session).
    public var requestTimeoutSeconds = 5
    /// How often a node reads the event log for events whose doorbell it missed.
    public var pollIntervalMilliseconds = 1000
    /// How long committed events stay in the event log (pushes to sessions that were away
    /// longer are not replayed; inboxes and ticket history stay).
    public var eventRetentionDays = 7

    public init() {}

    /// The password from `passwordFile` or `passwordEnvironment` (nil: none configured, for a
    /// server that trusts the connection).
    public func password(environment: [String: String] = ProcessInfo.processInfo.environment) throws(DesklineError) -> String? {
        if let name = passwordEnvironment {
            guard let value = environment[name] else {
                throw .invalidArgument("storage.postgres.passwordEnvironment: the environment variable \(name) is not set")
            }
            return value
        }
        guard let path = passwordFile else { return nil }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw .invalidArgument("storage.postgres.passwordFile: cannot read \(path)")
        }
        // (Split on line ends of either kind: "\r\n" is one Character in Swift.)
        let line = text.split(maxSplits: 1, omittingEmptySubsequences: false, whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard !line.isEmpty else { throw .invalidArgument("storage.postgres.passwordFile: \(path) is empty") }
        return line
    }

    /// Checks what a config file can get wrong, naming the key.
    public func validate() throws(DesklineError) {
        guard !host.isEmpty else { throw .invalidArgument("storage.postgres.host: must not be empty") }
        guard (1...65535).contains(port) else { throw .invalidArgument("storage.postgres.port: must be 1-65535") }
        guard !database.isEmpty else { throw .invalidArgument("storage.postgres.database: must not be empty") }
        guard !user.isEmpty else { throw .invalidArgument("storage.postgres.user: must not be empty") }
        guard Self.isPlainIdentifier(schema) else {
            throw .invalidArgument("storage.postgres.schema: '\(schema)' must be 1-63 of a-z 0-9 _, starting with a letter, and not pg_...")
        }
        guard passwordFile == nil || passwordEnvironment == nil else {
            throw .invalidArgument("storage.postgres: set passwordFile or passwordEnvironment, not both")
        }
        guard (1...1000).contains(poolSize) else { throw .invalidArgument("storage.postgres.poolSize: must be 1-1000") }
        for (key, value) in [("connectTimeoutSeconds", connectTimeoutSeconds), ("statementTimeoutSeconds", statementTimeoutSeconds),
                             ("requestTimeoutSeconds", requestTimeoutSeconds)] where !(1...3600).contains(value) {
            throw .invalidArgument("storage.postgres.\(key): must be 1-3600")
        }
        guard (10...60_000).contains(pollIntervalMilliseconds) else {
            throw .invalidArgument("storage.postgres.pollIntervalMilliseconds: must be 10-60000")
        }
        guard (1...3650).contains(eventRetentionDays) else { throw .invalidArgument("storage.postgres.eventRetentionDays: must be 1-3650") }
    }

    /// A schema name Deskline can use (quoted) in SQL: lower-case letters, digits and `_`, not
    /// PostgreSQL's reserved `pg_` prefix.
    public static func isPlainIdentifier(_ name: String) -> Bool {
        guard !name.hasPrefix("pg_") else { return false }
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count), let first = bytes.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first) else { return false }
        return bytes.allSatisfy { b in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || b == UInt8(ascii: "_")
        }
    }

    /// `prefer`: encryption if the server offers it, without checking its certificate (as
    /// libpq's `sslmode=prefer`; stock Debian servers have a self-signed one). `require` checks it.
    static var preferTLS: TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        return configuration
    }

    /// `host:port/database` for messages.
    public var serverDescription: String { "\(host):\(port)/\(database)" }

    /// The client configuration: every connection commits synchronously and bounds its
    /// statements, whatever the server's defaults are.
    public func clientConfiguration(password: String?, connections: Int) -> PostgresClient.Configuration {
        let tlsSetting: PostgresClient.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer: .prefer(Self.preferTLS)
        case .require: .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: password,
                                                         database: database, tls: tlsSetting)
        configuration.options.connectTimeout = .seconds(connectTimeoutSeconds)
        configuration.options.maximumConnections = connections
        configuration.options.minimumConnections = 0
        configuration.options.additionalStartupParameters = [
            ("synchronous_commit", "on"),
            ("statement_timeout", "\(statementTimeoutSeconds * 1000)"),
            ("idle_in_transaction_session_timeout", "\(max(statementTimeoutSeconds, requestTimeoutSeconds) * 2000)"),
            ("application_name", "deskline"),
        ]
        return configuration
    }
}
