@testable import DesklineGateway
import Testing

/// Every command × role × target, over a real socket, against an expectation written out here
/// independently of the command table (so a change to the table that opens access fails).
///
/// Tickets: acme #1001 is Ann's (customer, "own"), acme #1002 is Bob's ("same-tenant other
/// customer"), globex has #1001-#1003 so #1003 exists only in another tenant, #9999 nowhere.
@Suite struct AuthorizationMatrixTests {
    enum Role: String, CaseIterable { case guest, customer, agent, admin }
    enum Target: String, CaseIterable { case own = "#1001", otherCustomer = "#1002", otherTenant = "#1003", nonexistent = "#9999" }

    /// Who may use each command at all (before any ticket is looked at).
    static let access: [String: Set<Role>] = [
        "HELP": [.guest, .customer, .agent, .admin], "PING": [.guest, .customer, .agent, .admin],
        "PONG": [.guest, .customer, .agent, .admin], "QUIT": [.guest, .customer, .agent, .admin],
        "LOGIN": [.guest], "ME": [.customer, .agent, .admin],
        "TICKETS": [.customer], "NEW": [.customer], "CLOSE": [.customer],
        // CALL and CALLS exist for both sides, meaning different things (checked below).
        "CALL": [.customer, .agent, .admin], "CALLS": [.customer, .agent, .admin], "PROFILE": [.customer],
        "SHOW": [.customer, .agent, .admin], "HISTORY": [.customer, .agent, .admin],
        "MSG": [.customer, .agent, .admin], "PASSWD": [.customer, .agent, .admin],
        "QUEUE": [.agent, .admin], "JOIN": [.agent, .admin], "PART": [.agent, .admin], "NOTE": [.agent, .admin],
        "ASSIGN": [.agent, .admin], "STATUS": [.agent, .admin],
        "AGENTS": [.agent, .admin], "AWAY": [.agent, .admin], "BACK": [.agent, .admin], "CUSTOMER": [.admin],
        "NOTIFICATIONS": [.customer, .agent, .admin], "READ": [.customer, .agent, .admin],
    ]

    /// What a role that may use a ticket command sees for each target.
    static func ticketOutcome(_ role: Role, _ target: Target) -> String {
        switch (role, target) {
        case (.customer, .own): "OK"
        case (.agent, .own), (.agent, .otherCustomer), (.admin, .own), (.admin, .otherCustomer): "OK"
        default: "NO_SUCH_TICKET"
        }
    }

    static func refusal(_ role: Role, _ command: String) -> String {
        if role == .guest { return "NOT_LOGGED_IN" }
        return command == "LOGIN" ? "ALREADY_LOGGED_IN" : "FORBIDDEN"
    }

    /// The outcome of one reply: `OK` or the error code.
    static func outcome(_ reply: [String]) -> String {
        let words = reply.last!.split(separator: " ")
        return words[0] == "OK" ? "OK" : String(words[2])
    }

    @Test func matrixCoversEveryCommandInTheTable() {
        #expect(Set(CommandTable.standard.commands.map(\.name)) == Set(Self.access.keys))
    }

    /// Opens the matrix's tickets: acme #1001 (Ann's), #1002 (Bob's), globex #1001-#1003. Returns
    /// Ann's session.
    static func openTickets(_ server: TestServer) async throws -> TestClient {
        let ann = try await server.login("ann@acme.test")
        #expect(try await ann.command("NEW Ann's own ticket").first?.hasPrefix("OK NEW #1001") == true)
        let bob = try await server.login("bob@acme.test")
        #expect(try await bob.command("NEW Bob's ticket").first?.hasPrefix("OK NEW #1002") == true)
        let gus = try await server.login("gus@globex.test")
        for n in 1...3 { #expect(try await gus.command("NEW globex \(n)").first?.hasPrefix("OK NEW #100\(n)") == true) }
        for c in [bob, gus] { await c.close() }
        return ann
    }

    @Test func everyCommandRoleAndTargetGetsTheExpectedOutcome() async throws {
        try await withServer { server in
            let ann = try await Self.openTickets(server)

            var clients: [Role: TestClient] = [:]
            clients[.guest] = try await server.guest()
            clients[.customer] = ann
            clients[.agent] = try await server.login("amy@acme.test")
            clients[.admin] = try await server.login("ada@acme.test")

            var failures: [String] = []
            func check(_ role: Role, _ line: String, expect: String) async throws {
                let reply = try await clients[role]!.command(line)
                let got = Self.outcome(reply)
                if got != expect { failures.append("\(role) \(line): expected \(expect), got \(reply.last!)") }
            }

            // Commands that take a ticket, CLOSE last since it changes the ticket.
            let ticketCommands: [(String, (Target) -> String)] = [
                ("SHOW", { "SHOW \($0.rawValue)" }), ("HISTORY", { "HISTORY \($0.rawValue)" }),
                ("MSG", { "MSG \($0.rawValue) matrix message" }), ("NOTE", { "NOTE \($0.rawValue) matrix note" }),
                ("JOIN", { "JOIN \($0.rawValue)" }), ("ASSIGN", { "ASSIGN \($0.rawValue) me" }),
                ("STATUS", { "STATUS \($0.rawValue) pending" }), ("CALL", { "CALL \($0.rawValue) matrix call" }),
                ("CLOSE", { "CLOSE \($0.rawValue)" }),
            ]
            var notFoundTexts: [Role: Set<String>] = [:]
            for (name, line) in ticketCommands {
                for role in Role.allCases {
                    for target in Target.allCases {
                        var expected = Self.access[name]!.contains(role) ? Self.ticketOutcome(role, target) : Self.refusal(role, name)
                        if name == "CALL", role == .agent || role == .admin { expected = "INVALID_ARGUMENT" } // staff CALL is ACCEPT|DONE
                        let reply = try await clients[role]!.command(line(target))
                        let got = Self.outcome(reply)
                        if got != expected { failures.append("\(role) \(line(target)): expected \(expected), got \(reply.last!)") }
                        if got == "NO_SUCH_TICKET" {
                            notFoundTexts[role, default: []].insert(reply.last!.replacingOccurrences(of: target.rawValue, with: "#N")
                                .replacingOccurrences(of: "ERR \(name) ", with: "ERR * "))
                        }
                    }
                }
            }
            // Another customer's, another tenant's and a missing ticket: one and the same answer,
            // pointing customers to their tickets and staff to the helpdesk's.
            #expect(notFoundTexts[.customer] == ["ERR * NO_SUCH_TICKET :No ticket #N that you can see. TICKETS lists yours."])
            for role in [Role.agent, .admin] {
                #expect(notFoundTexts[role] == ["ERR * NO_SUCH_TICKET :No ticket #N in this helpdesk. QUEUE lists its tickets."])
            }

            // Commands without a ticket: allowed roles succeed (or fail on their own terms), others are refused.
            let plain: [(String, String, String)] = [ // name, line, outcome when allowed
                ("HELP", "HELP", "OK"), ("PING", "PING x", "OK"), ("PONG", "PONG x", "OK"), ("ME", "ME", "OK"),
                ("TICKETS", "TICKETS", "OK"), ("NEW", "NEW matrix subject", "OK"), ("CALLS", "CALLS", "OK"),
                ("PROFILE", "PROFILE phone +1 555 0199", "OK"),
                ("PASSWD", "PASSWD not-the-password new password", "WRONG_PASSWORD"),
                ("LOGIN", "LOGIN nobody@acme.test wrong", "LOGIN_FAILED"),
                ("QUEUE", "QUEUE all", "OK"), ("PART", "PART #1001", "OK"), // staff JOINed #1001 above
                ("NOTIFICATIONS", "NOTIFICATIONS all", "OK"), ("READ", "READ all", "OK"),
                ("AGENTS", "AGENTS", "OK"), ("AWAY", "AWAY lunch", "OK"), ("BACK", "BACK", "OK"),
                ("CUSTOMER", "CUSTOMER LOGIN c1", "CONFLICT"), // Ann (c1) already has a login
            ]
            for (name, line, allowed) in plain {
                for role in Role.allCases {
                    try await check(role, line, expect: Self.access[name]!.contains(role) ? allowed : Self.refusal(role, name))
                }
            }
            // The staff side of CALL: Ann's call 1 (from the ticket loop above).
            try await check(.agent, "CALL ACCEPT 1", expect: "OK")
            try await check(.admin, "CALL ACCEPT 1", expect: "CONFLICT")
            try await check(.admin, "CALL DONE 1 admins may finish", expect: "OK")
            try await check(.guest, "CALL ACCEPT 1", expect: "NOT_LOGGED_IN")
            for role in Role.allCases {
                let client = try #require(clients[role])
                try await client.send("QUIT")
                #expect(try await client.readUntilClosed().filter { !$0.hasPrefix("EVENT ") } == ["OK QUIT :Goodbye"])
            }
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        }
    }
}
