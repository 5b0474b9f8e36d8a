import DesklineCore
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The hostile-input battery: everything at once against one server, while a well-behaved agent
/// stays connected and must keep receiving every event, and rejected input must change nothing.
@Suite struct HostileInputTests {
    @Test func serverAndItsUsersSurviveTheBattery() async throws {
        try await withServer(configure: { $0.limits.maxLineBytes = 32_768 }) { server in
            let acme = TenantID(rawValue: "acme")!
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Under attack")
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.drain()
            #expect(try await amy.command("JOIN #1001").first?.hasPrefix("OK JOIN") == true)
            var posted = 0
            func post() async throws {
                posted += 1
                #expect(try await ann.command("MSG #1001 legit \(posted)").first?.hasPrefix("OK MSG") == true)
            }

            let attacker = try await server.guest()
            // Overlong line, and 1 MiB without a newline (never buffered whole).
            try await attacker.sendRaw(Array(repeating: UInt8(ascii: "A"), count: 40_000) + [0x0A])
            #expect(try await attacker.readReply().last?.hasPrefix("ERR * LINE_TOO_LONG") == true)
            try await attacker.sendRaw(Array(repeating: UInt8(ascii: "B"), count: 1 << 20))
            try await attacker.sendRaw([0x0A])
            #expect(try await attacker.readReply().last?.hasPrefix("ERR * LINE_TOO_LONG") == true)
            try await post()
            // Invalid UTF-8, NUL, terminal escapes, telnet IAC negotiation bytes.
            try await attacker.sendRaw(Array("PING ".utf8) + [0xC0, 0xAF, 0x0A])
            #expect(try await attacker.readReply() == ["ERR * INVALID_UTF8 :The line is not valid UTF-8; it was discarded."])
            try await attacker.sendRaw(Array("PING a".utf8) + [0x00] + Array("b\n".utf8))
            #expect(try await attacker.readReply() == ["ERR * NUL_BYTE :The line contains a NUL byte; it was discarded."])
            try await attacker.sendRaw([0xFF, 0xFB, 0x01, 0xFF, 0xFD, 0x03, 0x0A])
            #expect(try await attacker.readReply() == ["ERR * INVALID_UTF8 :The line is not valid UTF-8; it was discarded."])
            #expect(try await attacker.command("\u{1B}]0;pwned\u{07}\u{1B}[2J").last?.hasPrefix("ERR * INVALID_COMMAND :'?]0;pwned??[2J'") == true)
            // 10,000 parameters, a line of only tags, empty lines.
            #expect(try await attacker.command("HELP " + Array(repeating: "x", count: 10_000).joined(separator: " ")).last?.hasPrefix("ERR HELP TOO_MANY_PARAMS") == true)
            #expect(try await attacker.command("@a=b;c=d;label=t") == ["@label=t ERR * NO_COMMAND :The line has no command. Type HELP for the list of commands."])
            try await attacker.sendRaw(Array("\n\r\n   \n".utf8))
            #expect(try await attacker.command("@label=l\u{202E}x PING to\u{202E}ken") == ["@label=l?x OK PING :to?ken"])
            #expect(try await attacker.command("PING alive") == ["OK PING :alive"])
            try await post()
            // 50 wrong passwords: throttled after the limit, the server does not care beyond that.
            var throttled = 0
            for _ in 0..<50 {
                if try await attacker.command("LOGIN ann@acme.test wrong-\(posted)").last?.contains("THROTTLED") == true { throttled += 1 }
            }
            #expect(throttled == 45)
            try await post()
            // Slowloris: one byte at a time, a few of them.
            let slow = try await server.guest()
            for byte in "PING slow\n".utf8 {
                try await slow.sendRaw([byte])
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await slow.readReply() == ["OK PING :slow"])
            // 500 connection attempts from one address.
            var refused = 0
            for _ in 0..<500 {
                if let c = try? await TestClient.connect(port: server.port) {
                    if try await c.readLine()?.contains("TOO_MANY_CONNECTIONS") == true { refused += 1 }
                    await c.close()
                }
            }
            #expect(refused > 400)
            try await post()

            // The agent got every legit message, in order, and nothing else reached the ticket.
            var received: [String] = []
            while received.count < posted {
                received.append(String(try await amy.expectLine(startingWith: "EVENT TICKET #1001 ").split(separator: ":").last!))
            }
            #expect(received == (1...posted).map { "legit \($0)" })
            #expect(try await server.store.ticket(TicketID(1001), in: acme)?.lastSeq == posted)
            #expect(try await server.store.check(repair: false).problems == [])
            #expect(try await amy.command("PING end") == ["OK PING :end"])
            for c in [ann, amy, attacker, slow] { await c.close() }
        }
    }
}
