@testable import DesklineGateway
import Foundation
import Testing

/// The authorization matrix in the IRC dialect: every channel command × role × ticket, over real
/// sockets, against expectations written out here. A ticket that is not yours answers exactly
/// like one that does not exist. Tickets as in ``AuthorizationMatrixTests``: acme #1001 is Ann's,
/// #1002 Bob's, globex has #1001-#1003 (so #1003 exists only in another tenant), #9999 nowhere.
@Suite struct IRCAuthorizationMatrixTests {
    enum Role: String, CaseIterable { case customer, agent, admin }
    enum Target: String, CaseIterable { case own = "#1001", otherCustomer = "#1002", otherTenant = "#1003", nonexistent = "#9999" }

    static func visible(_ role: Role, _ target: Target) -> Bool {
        switch (role, target) {
        case (.customer, .own), (.agent, .own), (.agent, .otherCustomer), (.admin, .own), (.admin, .otherCustomer): true
        default: false
        }
    }

    /// The reply to one command, with the nick and channel written as `{N}` and `{C}`.
    static func expected(_ command: String, _ role: Role, _ target: Target) -> [String] {
        let visible = Self.visible(role, target)
        let none = [":deskline 403 {N} {C} :No such channel"]
        switch command {
        case "TOPIC {C}": return visible ? ["332", "333"] : none
        case "NAMES {C}": return visible ? ["353", "366"] : none
        case "MODE {C}": return visible ? ["324", "329"] : none
        case "WHO {C}": return visible ? ["352", "315"] : none
        case "PRIVMSG {C} :hello": return visible ? [] : none
        case "PRIVMSG @{C} :note":
            if role == .customer { return [":deskline 482 {N} {C} :Only staff write internal notes"] }
            return visible ? [] : none
        case "CHATHISTORY LATEST {C} * 5": return visible ? ["BATCH", "BATCH"] : [":deskline FAIL CHATHISTORY INVALID_TARGET LATEST {C} :No such channel"]
        default: return []
        }
    }

    static let commands = ["TOPIC {C}", "NAMES {C}", "MODE {C}", "WHO {C}", "PRIVMSG {C} :hello", "PRIVMSG @{C} :note", "CHATHISTORY LATEST {C} * 5"]

    @Test func everyChannelCommandRoleAndTicketGetsTheExpectedReply() async throws {
        try await withServer { server in
            let ann = try await AuthorizationMatrixTests.openTickets(server)
            let logins: [(Role, String, String)] = [(.customer, "ann@acme.test", "Ann_Customer"), (.agent, "amy@acme.test", "Amy_Agent"),
                                                    (.admin, "ada@acme.test", "Ada_Admin")]
            for (role, login, nick) in logins {
                let (client, _) = try await server.ircLogin(login, caps: ["batch", "draft/chathistory"])
                for target in Target.allCases {
                    for command in Self.commands {
                        let line = command.replacingOccurrences(of: "{C}", with: target.rawValue)
                        let reply = try await client.irc(line)
                        let expected = Self.expected(command, role, target).map {
                            $0.replacingOccurrences(of: "{N}", with: nick).replacingOccurrences(of: "{C}", with: target.rawValue)
                        }
                        if command.hasPrefix("CHATHISTORY"), expected == ["BATCH", "BATCH"] {
                            // The ticket's entries between the batch lines (the ones written here).
                            #expect(reply.first?.contains(" BATCH +") == true && reply.last?.contains(" BATCH -") == true, "\(role) \(line): \(reply)")
                            if role == .customer { #expect(!reply.contains { $0.contains("@#") }, "a note in a customer's history: \(reply)") }
                        } else if expected.allSatisfy({ !$0.hasPrefix(":") }) {
                            // Success: the numerics (or batch lines) in order.
                            let kinds = reply.map { $0.split(separator: " ").dropFirst().first.map(String.init) ?? "" }
                            #expect(kinds == expected, "\(role) \(line): \(reply)")
                        } else {
                            #expect(reply == expected, "\(role) \(line)")
                        }
                    }
                }
                await client.close()
            }
            // Nothing of Bob's ticket or of globex reached Ann on any path.
            let (annIRC, annLines) = try await server.ircLogin("ann@acme.test")
            let list = try await annIRC.irc("LIST")
            #expect(!(annLines + list).contains { $0.contains("Bob") || $0.contains("globex") || $0.contains("#1002") })
            for client in [ann, annIRC] { await client.close() }
        }
    }

    @Test func failedIRCLoginsCountAgainstTheSameLimitsAsLogin() async throws {
        try await withServer(configure: { $0.limits.loginFailuresPerAddress = 2 }) { server in
            for _ in 1...2 {
                let client = try await server.ircConnect()
                try await client.send("PASS amy@acme.test:wrong")
                try await client.send("NICK a")
                try await client.send("USER a 0 * :a")
                #expect(try await client.readUntilClosed().first == ":deskline 464 a :Password incorrect")
            }
            // Throttled now, whatever the dialect, even with the right password.
            let client = try await server.ircConnect()
            try await client.send("CAP REQ :sasl")
            try await client.send("AUTHENTICATE PLAIN")
            try await client.send("AUTHENTICATE " + Data("\0amy@acme.test\0\(TestServer.password)".utf8).base64EncodedString())
            let lines = try await client.sync()
            #expect(lines.last?.hasPrefix(":deskline 904 * :SASL authentication failed: ") == true, "\(lines)")
            #expect(lines.last?.contains("Too many failed logins") == true || lines.last?.contains("too many") == true, "\(lines)")
            let native = try await server.guest()
            #expect(try await native.command("LOGIN amy@acme.test \(TestServer.password)").last?.contains(" THROTTLED ") == true)
            await client.close()
            await native.close()
        }
    }
}
