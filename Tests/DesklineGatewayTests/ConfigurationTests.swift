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
        #expect(loaded == GatewayConfiguration())
    }

    @Test func emptyObjectGivesDefaults() throws {
        #expect(try parse("{}") == GatewayConfiguration())
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

    @Test func fractionalTimeoutsAreAllowed() throws {
        #expect(try parse(#"{"limits": {"registrationTimeoutSeconds": 0.5}}"#).limits.registrationTimeoutSeconds == 0.5)
    }
}
