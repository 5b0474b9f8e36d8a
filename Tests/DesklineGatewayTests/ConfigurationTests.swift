import DesklineCore
import DesklineGateway
import Foundation
import Testing

struct ConfigurationTests {
    func parse(_ json: String) throws(ConfigurationError) -> GatewayConfiguration {
        try GatewayConfiguration.parse(Data(json.utf8))
    }

    func error(_ json: String) -> String? {
        do {
            _ = try parse(json)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func checkedInConfigIsTheDocumentedDefault() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var loaded = try GatewayConfiguration.load(path: root.appendingPathComponent("config.json").path)
        #expect(loaded.dataDirectory == root.appendingPathComponent("data").path)
        loaded.dataDirectory = "./data"
        var defaults = GatewayConfiguration()
        defaults.irc.enabled = true // config.json has an `irc` section
        #expect(loaded == defaults)
    }

    @Test func emptyObjectGivesDefaults() throws {
        #expect(try parse("{}") == GatewayConfiguration())
    }

    @Test func anIRCSectionTurnsTheIRCListenerOnAndAConfigWithoutOneOpensNoNewPort() throws {
        #expect(try parse("{}").irc.enabled == false)
        #expect(try parse(#"{"irc": {}}"#).irc.enabled == true)
        #expect(try parse(#"{"irc": {"enabled": false}}"#).irc.enabled == false)
        #expect(try parse(#"{"irc": {"port": 7000}}"#).irc.port == 7000)
        #expect(error(#"{"irc": {"port": 6667}}"#) == "irc.port: 6667 is also listen.port; the IRC listener needs a port of its own")
        #expect(error(#"{"irc": {"prot": 1}}"#) == "irc.prot: unknown key")
    }

    @Test func unknownKeysAreNamed() {
        #expect(error(#"{"listn": {}}"#) == "listn: unknown key")
        #expect(error(#"{"limits": {"maxLineByte": 10}}"#) == "limits.maxLineByte: unknown key")
    }

    @Test func badValuesAreNamed() {
        #expect(error(#"{"listen": {"port": "6667"}}"#) == "listen.port: must be an integer")
        #expect(error(#"{"listen": {"port": 70000}}"#) == "listen.port: 70000 is out of range 0...65535")
        #expect(error(#"{"limits": {"maxLineBytes": true}}"#) == "limits.maxLineBytes: must be an integer")
        #expect(error(#"{"limits": {"registrationTimeoutSeconds": 0}}"#) == "limits.registrationTimeoutSeconds: must be more than 0 and at most 86400 seconds")
        #expect(error(#"{"logLevel": "loud"}"#)?.hasPrefix("logLevel: 'loud' is not one of") == true)
        #expect(error(#"{"passwordHashing": {"scryptN": 1000}}"#) == "passwordHashing.scryptN: must be a power of two")
        #expect(error(#"{"limits": []}"#) == "limits: must be a JSON object")
        #expect(error("{") != nil)
    }

    @Test func theStorageBackendAndPostgresSettingsAreReadAndCheckedByKey() throws {
        #expect(try parse("{}").storage.backend == .files)
        let config = try parse(#"""
            {"storage": {"backend": "postgres", "postgres": {"host": "db.internal", "port": 6543, "database": "help",
             "user": "gw", "passwordEnvironment": "DESKLINE_PG", "tls": "require", "schema": "deskline", "poolSize": 4,
             "connectTimeoutSeconds": 2, "statementTimeoutSeconds": 3, "requestTimeoutSeconds": 4,
             "pollIntervalMilliseconds": 500, "eventRetentionDays": 30}}}
            """#)
        #expect(config.storage.backend == .postgres)
        let p = config.storage.postgres
        #expect(p.host == "db.internal" && p.port == 6543 && p.database == "help" && p.user == "gw")
        #expect(p.passwordEnvironment == "DESKLINE_PG" && p.passwordFile == nil && p.tls == .require && p.schema == "deskline")
        #expect(p.poolSize == 4 && p.connectTimeoutSeconds == 2 && p.statementTimeoutSeconds == 3 && p.requestTimeoutSeconds == 4)
        #expect(p.pollIntervalMilliseconds == 500 && p.eventRetentionDays == 30)
        #expect(try p.password(environment: ["DESKLINE_PG": "s3cret"]) == "s3cret")
        #expect(throws: DesklineError.invalidArgument("storage.postgres.passwordEnvironment: the environment variable DESKLINE_PG is not set")) {
            try p.password(environment: [:])
        }

        #expect(error(#"{"storage": {"backend": "mysql"}}"#) == "storage.backend: 'mysql' is not one of files, postgres")
        #expect(error(#"{"storage": {"postgres": {"tls": "maybe"}}}"#) == "storage.postgres.tls: 'maybe' is not one of disable, prefer, require")
        #expect(error(#"{"storage": {"postgres": {"port": 0}}}"#) == "storage.postgres.port: 0 is out of range 1...65535")
        #expect(error(#"{"storage": {"postgres": {"schema": "Robert'); DROP"}}}"#)
            == "storage.postgres.schema: 'Robert'); DROP' must be 1-63 of a-z 0-9 _, starting with a letter, and not pg_...")
        #expect(error(#"{"storage": {"postgres": {"passwordFile": "a", "passwordEnvironment": "B"}}}"#)
            == "storage.postgres: set passwordFile or passwordEnvironment, not both")
        #expect(error(#"{"storage": {"postgres": {"password": "hunter2"}}}"#) == "storage.postgres.password: unknown key")
    }

    @Test func aRelativePostgresPasswordFileIsFoundBesideTheConfigFile() throws {
        let dir = NSTemporaryDirectory() + "deskline-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(#"{"storage": {"backend": "postgres", "postgres": {"passwordFile": "secrets/pg"}}}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        try FileManager.default.createDirectory(atPath: dir + "/secrets", withIntermediateDirectories: true)
        try Data("pa ss\nignored\n".utf8).write(to: URL(fileURLWithPath: dir + "/secrets/pg"))
        let settings = try GatewayConfiguration.load(path: dir + "/config.json").storage.postgres
        #expect(settings.passwordFile == URL(fileURLWithPath: dir + "/secrets/pg").standardizedFileURL.path)
        #expect(try settings.password() == "pa ss")
        var missing = settings
        missing.passwordFile = dir + "/nothing"
        #expect(throws: DesklineError.invalidArgument("storage.postgres.passwordFile: cannot read \(dir)/nothing")) { try missing.password() }
    }

    @Test func fractionalTimeoutsAreAllowed() throws {
        #expect(try parse(#"{"limits": {"registrationTimeoutSeconds": 0.5}}"#).limits.registrationTimeoutSeconds == 0.5)
    }

    @Test func hugePagesIsReadAndOnByDefault() throws {
        #expect(GatewayConfiguration().hugePages)
        #expect(try parse(#"{"hugePages": false}"#).hugePages == false)
        #expect(error(#"{"hugePages": "no"}"#) == "hugePages: must be true or false")
    }

    @Test func storageKeysAreRead() throws {
        #expect(GatewayConfiguration().storage.groupCommitIntervalMilliseconds == 2)
        #expect(try parse(#"{"storage": {"groupCommitIntervalMilliseconds": 0}}"#).storage.groupCommitIntervalMilliseconds == 0)
        #expect(try parse(#"{"storage": {"groupCommitIntervalMilliseconds": 10}}"#).storage.groupCommitIntervalMilliseconds == 10)
        #expect(error(#"{"storage": {"groupCommitIntervalMilliseconds": 1001}}"#)
            == "storage.groupCommitIntervalMilliseconds: 1001 is out of range 0...1000")
        #expect(error(#"{"storage": {"groupCommitIntervalMilliseconds": 1.5}}"#) == "storage.groupCommitIntervalMilliseconds: must be an integer")
        #expect(error(#"{"storage": {"commitDelay": 1}}"#) == "storage.commitDelay: unknown key")
    }

    @Test func tlsKeysAreRead() throws {
        let config = try parse(#"""
            {"tls": {"enabled": true, "host": "0.0.0.0", "port": 7000, "certificateChainFile": "/etc/deskline/cert.pem",
                     "privateKeyFile": "/etc/deskline/key.pem", "requireTLSForLogin": true}}
            """#)
        var expected = GatewayConfiguration.TLS()
        expected.enabled = true
        expected.host = "0.0.0.0"
        expected.port = 7000
        expected.certificateChainFile = "/etc/deskline/cert.pem"
        expected.privateKeyFile = "/etc/deskline/key.pem"
        expected.requireTLSForLogin = true
        #expect(config.tls == expected)
        #expect(GatewayConfiguration().tls.enabled == false && GatewayConfiguration().tls.port == 6697)
    }

    @Test func tlsMistakesAreNamed() {
        #expect(error(#"{"tls": {"enabled": true}}"#)
            == "tls.certificateChainFile: required when tls.enabled is true (a PEM certificate file)")
        #expect(error(#"{"tls": {"enabled": true, "certificateChainFile": "c.pem"}}"#)
            == "tls.privateKeyFile: required when tls.enabled is true (a PEM private key file)")
        #expect(error(#"{"tls": {"requireTLSForLogin": true}}"#) == "tls.requireTLSForLogin: needs tls.enabled, or nobody could log in")
        #expect(error(#"{"tls": {"enabled": "yes"}}"#) == "tls.enabled: must be true or false")
        #expect(error(#"{"tls": {"enabled": 1}}"#) == "tls.enabled: must be true or false")
        #expect(error(#"{"tls": {"port": 65536}}"#) == "tls.port: 65536 is out of range 0...65535")
        #expect(error(#"{"tls": {"certificate": "c.pem"}}"#) == "tls.certificate: unknown key")
        #expect(error(#"{"tls": {"enabled": true, "port": 6667, "certificateChainFile": "c.pem", "privateKeyFile": "k.pem"}}"#)
            == "tls.port: 6667 is also listen.port; the TLS listener needs a port of its own")
        // Off, the file keys may stay empty.
        #expect(error(#"{"tls": {"enabled": false, "certificateChainFile": "", "privateKeyFile": ""}}"#) == nil)
    }

    @Test func relativeTLSFilesAreRelativeToTheConfigFile() throws {
        let dir = NSTemporaryDirectory() + "deskline-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/tls", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(#"""
            {"tls": {"enabled": true, "certificateChainFile": "tls/cert.pem", "privateKeyFile": "/abs/key.pem"}}
            """#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let config = try GatewayConfiguration.load(path: dir + "/config.json")
        let base = URL(fileURLWithPath: dir).standardizedFileURL.path
        #expect(config.tls.certificateChainFile == base + "/tls/cert.pem")
        #expect(config.tls.privateKeyFile == "/abs/key.pem")
    }
}
