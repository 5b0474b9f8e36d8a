import DesklineCore
import DesklinePostgres
import Foundation
import Logging

/// Everything `config.json` can set. Defaults here are the documented defaults (README,
/// "Configuration"); the checked-in config.json spells every one of them out.
public struct GatewayConfiguration: Sendable, Equatable {
    public struct Listen: Sendable, Equatable {
        public var host = "127.0.0.1"
        public var port = 6667
        public init() {}
    }

    public struct Limits: Sendable, Equatable {
        /// Longest accepted line in bytes, tags included, line ending excluded. Longer lines are
        /// discarded without being buffered whole and answered with `ERR * LINE_TOO_LONG`.
        public var maxLineBytes = 4096
        /// A connection that has not logged in after this long is told so and closed.
        public var registrationTimeoutSeconds = 60.0
        /// A logged-in session silent this long is sent `EVENT PING`.
        public var pingIntervalSeconds = 120.0
        /// ... and dropped if it then stays silent this long.
        public var pingTimeoutSeconds = 60.0
        /// Event lines waiting for one client that does not read (beyond its socket buffers and
        /// 64 KiB); a client that lets more pile up is disconnected. Replies never count: they
        /// wait for the client to read, and so does its next command.
        public var sendQueueLines = 1024
        /// Password derivations that run at once; the rest of the CPU stays with the event loops.
        public var passwordCheckConcurrency = 1
        /// Password checks allowed to wait; beyond that LOGIN answers `ERR LOGIN BUSY`.
        public var passwordCheckQueue = 64
        /// Flood control: a session may send this many commands at once ...
        public var floodBurst = 100
        /// ... and then this many per second; faster commands wait (they are not refused).
        public var floodCommandsPerSecond = 50
        /// Connections at once, in total and from one address, and new ones per address per minute.
        public var maxConnections = 10_000
        public var maxConnectionsPerAddress = 20
        public var maxNewConnectionsPerAddressPerMinute = 60
        /// Failed logins allowed from one address within the window ...
        public var loginFailuresPerAddress = 5
        public var loginFailureWindowPerAddressSeconds = 300.0
        /// ... and for one account (the login as typed), before LOGIN answers `THROTTLED`.
        public var loginFailuresPerAccount = 10
        public var loginFailureWindowPerAccountSeconds = 900.0
        /// A failed LOGIN is answered no sooner than this after it started, whatever the account
        /// (unknown, or its hash stored at another cost than today's): reply timing then tells
        /// accounts apart only when a derivation takes longer than this.
        public var loginFailureDelayMilliseconds = 1000
        public init() {}
    }

    /// The second listener, with TLS. Off unless configured: it needs a certificate and its key.
    public struct TLS: Sendable, Equatable {
        public var enabled = false
        public var host = "127.0.0.1"
        public var port = 6697
        /// PEM file with the server's certificate, then any intermediates. Relative paths are
        /// relative to the config file's directory.
        public var certificateChainFile = ""
        /// PEM file with the certificate's private key, unencrypted.
        public var privateKeyFile = ""
        /// Refuse LOGIN and the other commands that carry a password on the plaintext listener.
        public var requireTLSForLogin = false
        public init() {}
    }

    /// The IRC listeners (docs/IRC.md): real IRC clients connect here. A listener speaks one
    /// dialect, so an IRC client never sees a native line and a bot never an IRC one.
    public struct IRC: Sendable, Equatable {
        /// Off without an `irc` section (a config from before the dialect opens no new port), on
        /// with one unless it says `"enabled": false`; config.json has one.
        public var enabled = false
        public var host = "127.0.0.1"
        public var port = 6668
        /// The IRC listener with TLS, when `tls.enabled` (same certificate and key).
        public var tlsPort = 6698
        public init() {}
    }

    /// Where the data lives: the file store (`dataDirectory`) or PostgreSQL (`postgres`).
    public struct Storage: Sendable, Equatable {
        public enum Backend: String, Sendable, Equatable, CaseIterable {
            /// One directory per tenant under `dataDirectory` (docs/STORAGE.md): one node.
            case files
            /// PostgreSQL (`storage.postgres`): one or several nodes.
            case postgres
        }

        public var backend = Backend.files
        /// How to reach PostgreSQL, for `backend` `postgres`.
        public var postgres = PostgresSettings()
        /// The file store: while a tenant's writer has writes waiting, it starts its next batch (one fsync) no
        /// sooner than this many milliseconds after the previous one started, or once 64 writes
        /// wait; an idle writer starts at once. Trades up to this much latency under load for
        /// far fewer fsyncs (0: a batch starts as soon as the previous one is durable).
        public var groupCommitIntervalMilliseconds = 2
        public init() {}
    }

    public var listen = Listen()
    public var tls = TLS()
    public var irc = IRC()
    /// Where the file store lives. Relative paths are relative to the config file's directory.
    public var dataDirectory = "./data"
    public var logLevel: Logger.Level = .info
    /// Let malloc use transparent huge pages (Linux, glibc 2.35+): `serve` re-executes itself
    /// once with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, chiefly for scrypt's 32 MiB.
    public var hugePages = true
    public var limits = Limits()
    public var storage = Storage()
    /// scrypt cost for new password hashes (existing hashes keep theirs).
    public var passwordHashing = PasswordHashingCost.standard

    public init() {}
}

/// A config file problem, naming the key.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension GatewayConfiguration {
    /// Reads a config file. Relative paths (`dataDirectory`, the TLS files) are resolved against
    /// the file's directory.
    public static func load(path: String) throws(ConfigurationError) -> GatewayConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read config file \(path)")
        }
        var config = try parse(data)
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ file: inout String) {
            if !file.isEmpty, !file.hasPrefix("/") { file = base.appendingPathComponent(file).standardizedFileURL.path }
        }
        resolve(&config.dataDirectory)
        resolve(&config.tls.certificateChainFile)
        resolve(&config.tls.privateKeyFile)
        if var file = config.storage.postgres.passwordFile {
            resolve(&file)
            config.storage.postgres.passwordFile = file
        }
        return config
    }

    /// Parses config JSON strictly: unknown keys and wrong types or ranges are errors naming the key.
    public static func parse(_ data: Data) throws(ConfigurationError) -> GatewayConfiguration {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data)
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey].map { "\($0)" } ?? error.localizedDescription
            throw ConfigurationError("config is not valid JSON: \(detail)")
        }
        var c = GatewayConfiguration()
        var r = try ObjectReader(json, path: "")
        if var listen = try r.object("listen") {
            c.listen.host = try listen.string("host") ?? c.listen.host
            c.listen.port = try listen.int("port", in: 0...65535) ?? c.listen.port
            try listen.finish()
        }
        if var tls = try r.object("tls") {
            c.tls.enabled = try tls.bool("enabled") ?? c.tls.enabled
            c.tls.host = try tls.string("host") ?? c.tls.host
            c.tls.port = try tls.int("port", in: 0...65535) ?? c.tls.port
            c.tls.certificateChainFile = try tls.string("certificateChainFile") ?? c.tls.certificateChainFile
            c.tls.privateKeyFile = try tls.string("privateKeyFile") ?? c.tls.privateKeyFile
            c.tls.requireTLSForLogin = try tls.bool("requireTLSForLogin") ?? c.tls.requireTLSForLogin
            try tls.finish()
            try c.tls.validate(besides: c.listen)
        }
        if var irc = try r.object("irc") {
            c.irc.enabled = try irc.bool("enabled") ?? true
            c.irc.host = try irc.string("host") ?? c.irc.host
            c.irc.port = try irc.int("port", in: 0...65535) ?? c.irc.port
            c.irc.tlsPort = try irc.int("tlsPort", in: 0...65535) ?? c.irc.tlsPort
            try irc.finish()
        }
        try c.irc.validate(besides: c)
        c.dataDirectory = try r.string("dataDirectory") ?? c.dataDirectory
        if c.dataDirectory.isEmpty { throw ConfigurationError("dataDirectory: must not be empty") }
        if let level = try r.string("logLevel") {
            guard let l = Logger.Level(rawValue: level) else {
                throw ConfigurationError("logLevel: '\(level)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            c.logLevel = l
        }
        c.hugePages = try r.bool("hugePages") ?? c.hugePages
        if var l = try r.object("limits") {
            c.limits.maxLineBytes = try l.int("maxLineBytes", in: 512...1_048_576) ?? c.limits.maxLineBytes
            c.limits.registrationTimeoutSeconds = try l.seconds("registrationTimeoutSeconds") ?? c.limits.registrationTimeoutSeconds
            c.limits.pingIntervalSeconds = try l.seconds("pingIntervalSeconds") ?? c.limits.pingIntervalSeconds
            c.limits.pingTimeoutSeconds = try l.seconds("pingTimeoutSeconds") ?? c.limits.pingTimeoutSeconds
            c.limits.sendQueueLines = try l.int("sendQueueLines", in: 16...1_000_000) ?? c.limits.sendQueueLines
            c.limits.passwordCheckConcurrency = try l.int("passwordCheckConcurrency", in: 1...64) ?? c.limits.passwordCheckConcurrency
            c.limits.passwordCheckQueue = try l.int("passwordCheckQueue", in: 0...100_000) ?? c.limits.passwordCheckQueue
            c.limits.floodBurst = try l.int("floodBurst", in: 1...100_000) ?? c.limits.floodBurst
            c.limits.floodCommandsPerSecond = try l.int("floodCommandsPerSecond", in: 1...100_000) ?? c.limits.floodCommandsPerSecond
            c.limits.maxConnections = try l.int("maxConnections", in: 1...1_000_000) ?? c.limits.maxConnections
            c.limits.maxConnectionsPerAddress = try l.int("maxConnectionsPerAddress", in: 1...1_000_000) ?? c.limits.maxConnectionsPerAddress
            c.limits.maxNewConnectionsPerAddressPerMinute = try l.int("maxNewConnectionsPerAddressPerMinute", in: 1...1_000_000)
                ?? c.limits.maxNewConnectionsPerAddressPerMinute
            c.limits.loginFailuresPerAddress = try l.int("loginFailuresPerAddress", in: 1...1_000_000) ?? c.limits.loginFailuresPerAddress
            c.limits.loginFailureWindowPerAddressSeconds = try l.seconds("loginFailureWindowPerAddressSeconds")
                ?? c.limits.loginFailureWindowPerAddressSeconds
            c.limits.loginFailuresPerAccount = try l.int("loginFailuresPerAccount", in: 1...1_000_000) ?? c.limits.loginFailuresPerAccount
            c.limits.loginFailureWindowPerAccountSeconds = try l.seconds("loginFailureWindowPerAccountSeconds")
                ?? c.limits.loginFailureWindowPerAccountSeconds
            c.limits.loginFailureDelayMilliseconds = try l.int("loginFailureDelayMilliseconds", in: 0...60_000)
                ?? c.limits.loginFailureDelayMilliseconds
            try l.finish()
        }
        if var s = try r.object("storage") {
            if let backend = try s.string("backend") {
                guard let b = Storage.Backend(rawValue: backend) else {
                    throw ConfigurationError("storage.backend: '\(backend)' is not one of \(Storage.Backend.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                c.storage.backend = b
            }
            c.storage.groupCommitIntervalMilliseconds = try s.int("groupCommitIntervalMilliseconds", in: 0...1000)
                ?? c.storage.groupCommitIntervalMilliseconds
            if var p = try s.object("postgres") {
                var g = c.storage.postgres
                g.host = try p.string("host") ?? g.host
                g.port = try p.int("port", in: 1...65535) ?? g.port
                g.database = try p.string("database") ?? g.database
                g.user = try p.string("user") ?? g.user
                g.passwordFile = try p.string("passwordFile") ?? g.passwordFile
                g.passwordEnvironment = try p.string("passwordEnvironment") ?? g.passwordEnvironment
                if let tls = try p.string("tls") {
                    guard let mode = PostgresSettings.TLSMode(rawValue: tls) else {
                        throw ConfigurationError("storage.postgres.tls: '\(tls)' is not one of \(PostgresSettings.TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    g.tls = mode
                }
                g.schema = try p.string("schema") ?? g.schema
                g.poolSize = try p.int("poolSize", in: 1...1000) ?? g.poolSize
                g.connectTimeoutSeconds = try p.int("connectTimeoutSeconds", in: 1...3600) ?? g.connectTimeoutSeconds
                g.statementTimeoutSeconds = try p.int("statementTimeoutSeconds", in: 1...3600) ?? g.statementTimeoutSeconds
                g.requestTimeoutSeconds = try p.int("requestTimeoutSeconds", in: 1...3600) ?? g.requestTimeoutSeconds
                g.pollIntervalMilliseconds = try p.int("pollIntervalMilliseconds", in: 10...60_000) ?? g.pollIntervalMilliseconds
                g.eventRetentionDays = try p.int("eventRetentionDays", in: 1...3650) ?? g.eventRetentionDays
                try p.finish()
                do {
                    try g.validate()
                } catch {
                    throw ConfigurationError(error.message)
                }
                c.storage.postgres = g
            }
            try s.finish()
        }
        if var p = try r.object("passwordHashing") {
            c.passwordHashing.n = try p.int("scryptN", in: 2...(1 << 20)) ?? c.passwordHashing.n
            c.passwordHashing.r = try p.int("scryptR", in: 1...32) ?? c.passwordHashing.r
            c.passwordHashing.p = try p.int("scryptP", in: 1...16) ?? c.passwordHashing.p
            guard c.passwordHashing.isValid else {
                throw ConfigurationError("passwordHashing.scryptN: must be a power of two")
            }
            try p.finish()
        }
        try r.finish()
        return c
    }
}

extension GatewayConfiguration.TLS {
    /// Checks what can be checked without reading the files (``makeServerContext()`` reads them).
    func validate(besides listen: GatewayConfiguration.Listen) throws(ConfigurationError) {
        if requireTLSForLogin, !enabled {
            throw ConfigurationError("tls.requireTLSForLogin: needs tls.enabled, or nobody could log in")
        }
        guard enabled else { return }
        if certificateChainFile.isEmpty {
            throw ConfigurationError("tls.certificateChainFile: required when tls.enabled is true (a PEM certificate file)")
        }
        if privateKeyFile.isEmpty {
            throw ConfigurationError("tls.privateKeyFile: required when tls.enabled is true (a PEM private key file)")
        }
        if port != 0, port == listen.port, host == listen.host {
            throw ConfigurationError("tls.port: \(port) is also listen.port; the TLS listener needs a port of its own")
        }
    }
}

extension GatewayConfiguration.IRC {
    func validate(besides c: GatewayConfiguration) throws(ConfigurationError) {
        guard enabled else { return }
        let taken = [(c.listen.port, c.listen.host, "listen.port")] + (c.tls.enabled ? [(c.tls.port, c.tls.host, "tls.port")] : [])
        for (port, host, key) in taken where port != 0 && host == self.host {
            if self.port == port { throw ConfigurationError("irc.port: \(port) is also \(key); the IRC listener needs a port of its own") }
            if c.tls.enabled, tlsPort == port { throw ConfigurationError("irc.tlsPort: \(port) is also \(key); the IRC TLS listener needs a port of its own") }
        }
        if c.tls.enabled, port != 0, port == tlsPort {
            throw ConfigurationError("irc.tlsPort: \(port) is also irc.port; the IRC TLS listener needs a port of its own")
        }
    }
}

/// Reads one JSON object key by key and complains about anything it did not read.
private struct ObjectReader {
    let object: [String: Any]
    let path: String
    var seen: Set<String> = []

    init(_ value: Any, path: String) throws(ConfigurationError) {
        guard let object = value as? [String: Any] else {
            throw ConfigurationError("\(path.isEmpty ? "config" : path): must be a JSON object")
        }
        self.object = object
        self.path = path
    }

    private func name(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    private mutating func value(_ key: String) -> Any? {
        seen.insert(key)
        return object[key]
    }

    mutating func object(_ key: String) throws(ConfigurationError) -> ObjectReader? {
        guard let v = value(key) else { return nil }
        return try ObjectReader(v, path: name(key))
    }

    mutating func string(_ key: String) throws(ConfigurationError) -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v as? String else { throw ConfigurationError("\(name(key)): must be a string") }
        return s
    }

    mutating func bool(_ key: String) throws(ConfigurationError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, n.isBoolean else { throw ConfigurationError("\(name(key)): must be true or false") }
        return n.boolValue
    }

    mutating func int(_ key: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, !n.isBoolean, n.doubleValue == n.doubleValue.rounded(),
              let i = Int(exactly: n.doubleValue)
        else { throw ConfigurationError("\(name(key)): must be an integer") }
        guard range.contains(i) else {
            throw ConfigurationError("\(name(key)): \(i) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return i
    }

    mutating func seconds(_ key: String) throws(ConfigurationError) -> Double? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, !n.isBoolean else {
            throw ConfigurationError("\(name(key)): must be a number of seconds")
        }
        let d = n.doubleValue
        guard d > 0, d <= 86_400 else { throw ConfigurationError("\(name(key)): must be more than 0 and at most 86400 seconds") }
        return d
    }

    func finish() throws(ConfigurationError) {
        if let unknown = object.keys.filter({ !seen.contains($0) }).sorted().first {
            throw ConfigurationError("\(name(unknown)): unknown key")
        }
    }
}

extension NSNumber {
    /// JSON `true`/`false` also arrive as NSNumber; they are not numbers in a config file.
    fileprivate var isBoolean: Bool { String(cString: objCType) == "c" }
}
