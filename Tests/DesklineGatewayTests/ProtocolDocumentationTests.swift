import DesklineCore
@testable import DesklineGateway
import Foundation
import Testing

/// docs/PROTOCOL.md must match the code: every command with its usage and roles, and every
/// machine code the sources can put on the wire.
struct ProtocolDocumentationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let doc = (try? String(contentsOf: root.appendingPathComponent("docs/PROTOCOL.md"), encoding: .utf8)) ?? ""

    @Test func everyCommandHasItsRowInTheRoleTable() {
        for command in CommandTable.standard.commands {
            let cells = [command.access.beforeLogin] + Role.allCases.map { command.access.roles.contains($0) }
            // Markdown tables need `|` escaped, also inside code spans.
            let usage = command.usage.replacingOccurrences(of: "|", with: "\\|")
            let row = "| `\(usage)` | " + cells.map { $0 ? "yes" : "no" }.joined(separator: " | ") + " |"
            #expect(Self.doc.contains(row), "PROTOCOL.md lacks the row: \(row)")
            #expect(Self.doc.contains("### \(command.name)\n"), "PROTOCOL.md lacks a section for \(command.name)")
        }
    }

    @Test func everyCodeInTheSourcesIsDocumented() throws {
        let sources = ["Sources/DesklineGateway", "Sources/DesklineProtocol", "Sources/DesklineCore/Support"]
        let pattern = try Regex(#""([A-Z][A-Z_]{2,})""#)
        var codes = Set<String>()
        for dir in sources {
            let base = Self.root.appendingPathComponent(dir)
            let files = FileManager.default.enumerator(atPath: base.path)?.compactMap { $0 as? String } ?? []
            // The IRC dialect's words are IRC's; docs/IRC.md documents them (test below).
            for file in files where file.hasSuffix(".swift") && !file.hasPrefix("IRC/") {
                let text = try String(contentsOf: base.appendingPathComponent(file), encoding: .utf8)
                for match in text.matches(of: pattern) {
                    codes.insert(String(text[match.output[1].range!]))
                }
            }
        }
        #expect(codes.contains("LINE_TOO_LONG") && codes.contains("LOGIN_FAILED"), "the scan found \(codes)")
        for code in codes.sorted() {
            #expect(Self.doc.contains(code), "PROTOCOL.md does not mention \(code)")
        }
    }
}

/// docs/IRC.md must match the IRC dialect: every numeric it sends, every command and code it
/// names, every capability and ISUPPORT token it offers.
struct IRCDocumentationTests {
    static let doc = (try? String(contentsOf: ProtocolDocumentationTests.root.appendingPathComponent("docs/IRC.md"), encoding: .utf8)) ?? ""

    @Test func everyNumericCommandAndCodeOfTheDialectIsDocumented() throws {
        let base = ProtocolDocumentationTests.root.appendingPathComponent("Sources/DesklineGateway/IRC")
        let files = try FileManager.default.contentsOfDirectory(atPath: base.path).filter { $0.hasSuffix(".swift") }
        #expect(files.count >= 5)
        var words = Set<String>()
        for file in files {
            let text = try String(contentsOf: base.appendingPathComponent(file), encoding: .utf8)
            for match in text.matches(of: try Regex(#""([0-9]{3}|[A-Z][A-Z_0-9]{2,})""#)) {
                words.insert(String(text[match.output[1].range!]))
            }
        }
        #expect(words.contains("001") && words.contains("PRIVMSG") && words.contains("INVALID_TARGET"), "the scan found \(words)")
        for word in words.sorted() {
            let mentioned = try Regex("\\b\(word)\\b")
            #expect(Self.doc.contains(mentioned), "docs/IRC.md does not mention \(word)")
        }
    }

    @Test func everyCapabilityAndISUPPORTTokenIsDocumented() {
        for cap in IRCConnection.capabilities {
            #expect(Self.doc.contains("| `\(cap.name)` |"), "docs/IRC.md lacks the capability \(cap.name)")
        }
        for token in IRCConnection.isupport(network: "Acme") where !token.hasPrefix("NETWORK=") {
            let name = String(token.prefix { $0 != "=" })
            #expect(Self.doc.contains("`\(name)"), "docs/IRC.md lacks the ISUPPORT token \(name)")
        }
    }
}
