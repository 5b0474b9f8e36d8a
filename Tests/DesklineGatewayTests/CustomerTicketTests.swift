import DesklineCore
import Foundation
import Testing

@Suite struct CustomerTicketTests {
    let acme = TenantID(rawValue: "acme")!

    @Test func customerOpensWritesListsAndReadsATicket() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            #expect(try await ann.command("NEW Printer is on fire") == ["OK NEW #1001 open :Ticket #1001 opened: Printer is on fire"])
            #expect(try await ann.command("MSG #1001 It is  really burning").first == "OK MSG #1001 1 open :Message 1 added to #1001")
            #expect(try await ann.command("MSG 1001 :  with a colon  ").first == "OK MSG #1001 2 open :Message 2 added to #1001")
            let list = try await ann.command("TICKETS")
            #expect(list.count == 2)
            #expect(list[0].hasPrefix("RPL TICKETS #1001 open 20"))
            #expect(list[0].hasSuffix(" 0 * :Printer is on fire"))
            #expect(list[1] == "OK TICKETS 1 :1 tickets")
            let show = try await ann.command("SHOW #1001")
            #expect(show.contains("RPL SHOW #1001 subject :Printer is on fire"))
            #expect(show.contains("RPL SHOW #1001 status :open"))
            #expect(show.contains("RPL SHOW #1001 entries :2"))
            let entries = show.filter { $0.hasPrefix("RPL SHOW #1001 entry ") }
            #expect(entries.count == 2)
            #expect(entries[0].hasSuffix(#" message customer Ann\sCustomer :It is  really burning"#))
            #expect(entries[1].hasSuffix(#" message customer Ann\sCustomer :with a colon"#))
            #expect(try await ann.command("TICKETS closed") == ["OK TICKETS 0 :0 tickets"])
            await ann.close()
        }
    }

    @Test func spoofedTenantCustomerAndUserIdsAreNeverHonoured() async throws {
        try await withServer { server in
            let bob = try await server.login("bob@acme.test")
            _ = try await bob.command("NEW Bob's private ticket")
            _ = try await bob.command("MSG #1001 secret")
            let ann = try await server.login("ann@acme.test")
            // Through tags: ignored.
            #expect(try await ann.command("@tenant=globex;customer=c2;customer_id=c2;user=u4 TICKETS") == ["OK TICKETS 0 :0 tickets"])
            #expect(try await ann.command("@customer_id=c2 SHOW #1001").last == "ERR SHOW NO_SUCH_TICKET :No ticket #1001 that you can see. TICKETS lists yours.")
            #expect(try await ann.command("@customer_id=c2;tenant=acme MSG #1001 injected").last == "ERR MSG NO_SUCH_TICKET :No ticket #1001 that you can see. TICKETS lists yours.")
            #expect(try await ann.command("@customer_id=c2 CALL #1001 call Bob instead").last == "ERR CALL NO_SUCH_TICKET :No ticket #1001 that you can see. TICKETS lists yours.")
            // Through parameters: not a ticket reference, or just text.
            #expect(try await ann.command("SHOW acme/#1001").last == "ERR SHOW INVALID_ARGUMENT :'acme/#1001' is not a ticket number; write it like #1001")
            #expect(try await ann.command("SHOW #1001@c2").last == "ERR SHOW INVALID_ARGUMENT :'#1001@c2' is not a ticket number; write it like #1001")
            #expect(try await ann.command("TICKETS c2").last == "ERR TICKETS INVALID_ARGUMENT :'c2' is not a status; use open, pending, resolved or closed")
            #expect(try await ann.command("@customer_id=c2 NEW customer_id=c2 tenant=globex").first == "OK NEW #1002 open :Ticket #1002 opened: customer_id=c2 tenant=globex")
            #expect(try await ann.command("@customer_id=c2 CALL customer_id=c2 phone=+1999").first?.hasPrefix("OK CALL 1 requested * :") == true)
            #expect(try await ann.command("@customer_id=c2 PROFILE phone +1 555 0177").first == "OK PROFILE phone :+1 555 0177")

            // Nothing of Bob's changed; Ann's new ticket and call are Ann's, with Ann's phone.
            let bobsTicket = try #require(try await server.store.ticket(TicketID(1001), in: acme))
            #expect(bobsTicket.customerId == CustomerID(rawValue: "c2") && bobsTicket.lastSeq == 1)
            let bobsRecord = try #require(try await server.store.customer(CustomerID(rawValue: "c2")!, in: acme))
            #expect(bobsRecord.phone == "+1 555 0102")
            #expect(try await server.store.ticket(TicketID(1002), in: acme)?.customerId == CustomerID(rawValue: "c1"))
            let calls = try await server.store.calls(ofCustomer: CustomerID(rawValue: "c1")!, in: acme)
            #expect(calls.map(\.phone) == ["+1 555 0101"])
            #expect(try await server.store.calls(ofCustomer: CustomerID(rawValue: "c2")!, in: acme).isEmpty)
            // Another tenant's customer with the same ids sees only their own tenant.
            let gus = try await server.login("gus@globex.test")
            #expect(try await gus.command("TICKETS") == ["OK TICKETS 0 :0 tickets"])
            #expect(try await gus.command("SHOW #1002").last == "ERR SHOW NO_SUCH_TICKET :No ticket #1002 that you can see. TICKETS lists yours.")
            for c in [ann, bob, gus] { await c.close() }
        }
    }

    @Test func controlCharactersAndEscapesAreRemovedBeforeStorage() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW \u{1B}[31mRed\u{1B}[0m subject\u{07}")
            #expect(try await ann.command("MSG #1001 hi \u{1B}[2J\u{1B}]0;owned\u{07}there\u{1B}c\u{9B}1m!\tok").first?.hasPrefix("OK MSG") == true)
            let history = try await ann.command("HISTORY #1001")
            #expect(history.first?.hasSuffix(" :hi there!\tok") == true, "\(history)")
            let stored = try await server.store.entries(of: TicketID(1001), in: acme, after: nil, before: nil, limit: 10, includeNotes: true)
            #expect(stored.map(\.text) == ["hi there!\tok"])
            #expect(try await server.store.ticket(TicketID(1001), in: acme)?.subject == "Red subject")
            // Only escapes and controls: nothing left to store.
            #expect(try await ann.command("MSG #1001 \u{1B}[2J\u{07}").last == "ERR MSG INVALID_ARGUMENT :the message is empty")
            // Invalid UTF-8 never reaches a command.
            try await ann.sendRaw(Array("MSG #1001 bad ".utf8) + [0xC3, 0x28] + Array("\n".utf8))
            #expect(try await ann.readReply() == ["ERR * INVALID_UTF8 :The line is not valid UTF-8; it was discarded."])
            #expect(try await server.store.ticket(TicketID(1001), in: acme)?.lastSeq == 1)
            await ann.close()
        }
    }

    @Test func messagesHaveAMaximumLength() async throws {
        try await withServer(configure: { $0.limits.maxLineBytes = 16_384 }) { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Long")
            #expect(try await ann.command("MSG #1001 " + String(repeating: "é", count: 4000)).first?.hasPrefix("OK MSG #1001 1") == true)
            #expect(try await ann.command("MSG #1001 " + String(repeating: "x", count: 4001)).last
                    == "ERR MSG INVALID_ARGUMENT :the message is longer than 4000 characters")
            #expect(try await ann.command("NEW " + String(repeating: "s", count: 201)).last
                    == "ERR NEW INVALID_ARGUMENT :the subject is longer than 200 characters")
            await ann.close()
        }
    }

    @Test func historyPagesOldestFirstInBothDirections() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Paging")
            for n in 1...25 { _ = try await ann.command("MSG #1001 message \(n)") }
            func texts(_ reply: [String]) -> [String] { reply.dropLast().map { String($0.split(separator: ":").last!) } }
            let latest = try await ann.command("HISTORY #1001")
            #expect(texts(latest) == (6...25).map { "message \($0)" })
            #expect(latest.last == "OK HISTORY #1001 20 :20 entries")
            #expect(texts(try await ann.command("HISTORY #1001 before 6")) == (1...5).map { "message \($0)" })
            #expect(texts(try await ann.command("HISTORY #1001 after 20 3")) == ["message 21", "message 22", "message 23"])
            #expect(texts(try await ann.command("HISTORY #1001 before 3 1")) == ["message 2"])
            #expect(texts(try await ann.command("HISTORY #1001 after 25")) == [])
            #expect(try await ann.command("HISTORY #1001 0").last == "ERR HISTORY INVALID_ARGUMENT :the limit must be 1-100")
            #expect(try await ann.command("HISTORY #1001 101").last == "ERR HISTORY INVALID_ARGUMENT :the limit must be 1-100")
            #expect(try await ann.command("HISTORY #1001 before").last?.hasPrefix("ERR HISTORY INVALID_ARGUMENT :before needs a message id") == true)
            #expect(try await ann.command("HISTORY #1001 after 2 3 4").last?.hasPrefix("ERR HISTORY TOO_MANY_PARAMS") == true)
            await ann.close()
        }
    }

    @Test func closedTicketsTakeNoMoreMessages() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Done soon")
            #expect(try await ann.command("CLOSE #1001") == ["OK CLOSE #1001 closed :Ticket #1001 is closed"])
            #expect(try await ann.command("MSG #1001 one more thing").last == "ERR MSG TICKET_CLOSED :Ticket #1001 is closed. Open a new one with NEW <subject>.")
            #expect(try await ann.command("CLOSE #1001").last == "ERR CLOSE TICKET_CLOSED :Ticket #1001 is closed. Open a new one with NEW <subject>.")
            let amy = try await server.login("amy@acme.test")
            #expect(try await amy.command("MSG #1001 agent too").last == "ERR MSG TICKET_CLOSED :Ticket #1001 is closed. Open a new one with NEW <subject>.")
            let history = try await ann.command("HISTORY #1001")
            #expect(history.first?.hasSuffix(#" status customer Ann\sCustomer :closed"#) == true)
            for c in [ann, amy] { await c.close() }
        }
    }

    @Test func callsUseThePhoneOnRecord() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Call me")
            #expect(try await ann.command("CALL #1001 after 5pm please") == ["OK CALL 1 requested #1001 :Call 1 requested about #1001: an agent will phone you at +1 555 0101"])
            let calls = try await ann.command("CALLS")
            #expect(calls.count == 2)
            #expect(calls[0].hasPrefix("RPL CALLS 1 requested 20"))
            #expect(calls[0].hasSuffix(#" #1001 +1\s555\s0101 :after 5pm please"#))
            #expect(try await ann.command("PROFILE phone none") == ["OK PROFILE phone :"])
            #expect(try await ann.command("CALL").last == "ERR CALL NO_PHONE :There is no phone number on your record. Add one with PROFILE phone <number>, then CALL again.")
            #expect(try await ann.command("PROFILE phone call me maybe").last?.hasPrefix("ERR PROFILE INVALID_ARGUMENT") == true)
            #expect(try await ann.command("PROFILE email x@y.z").last == "ERR PROFILE INVALID_ARGUMENT :'email' is not a profile field; use name or phone")
            await ann.close()
        }
    }

    @Test func aCustomerTypingTheAgentsCallCommandsFilesNoCallRequest() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            let amy = try await server.login("amy@acme.test")
            _ = try await ann.command("NEW Call me")
            for line in ["CALL ACCEPT 1", "CALL done 1 talked", "CALL #1001 Accept 1"] {
                let word = line.split(separator: " ").first { !$0.hasPrefix("#") && $0 != "CALL" }!.uppercased()
                #expect(try await ann.command(line) == ["ERR CALL INVALID_ARGUMENT :CALL ACCEPT and CALL DONE are for agents; a call request's note cannot start with \(word). Usage: CALL [#<ticket>] [<note>]"])
            }
            // Nothing was filed, and no agent was rung.
            #expect(try await ann.command("CALLS") == ["OK CALLS 0 :0 call requests"])
            #expect(try await amy.drain().filter { $0.hasPrefix("EVENT CALL") } == [])
            // A note that only contains the word is fine.
            #expect(try await ann.command("CALL when done, please").first?.hasPrefix("OK CALL 1 requested") == true)
            for c in [ann, amy] { await c.close() }
        }
    }

    @Test func profileNameAndPasswordChanges() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            #expect(try await ann.command("PROFILE name Ann B. Customer") == ["OK PROFILE name :Ann B. Customer"])
            #expect(try await ann.command("ME").contains("RPL ME name :Ann B. Customer"))
            #expect(try await ann.command("PASSWD wrong new password").last == "ERR PASSWD WRONG_PASSWORD :The current password is not correct; nothing was changed.")
            #expect(try await ann.command(#"PASSWD correct\shorse\sbattery my new pass phrase"#) == ["OK PASSWD :Password changed"])
            await ann.close()
            let again = try await server.guest()
            #expect(try await again.command("LOGIN ann@acme.test correct horse battery").last?.hasPrefix("ERR LOGIN LOGIN_FAILED") == true)
            #expect(try await again.command("LOGIN ann@acme.test my new pass phrase").first?.hasPrefix("OK LOGIN customer") == true)
            await again.close()
        }
    }

    @Test func everythingAcknowledgedSurvivesARestart() async throws {
        let first = try await TestServer.start()
        let ann = try await first.login("ann@acme.test")
        _ = try await ann.command("NEW Before the restart")
        _ = try await ann.command("MSG #1001 first")
        _ = try await ann.command("MSG #1001 second")
        _ = try await ann.command("CALL #1001 ring me")
        _ = try await ann.command("PROFILE name Ann Restarted")
        let before = try await ann.command("HISTORY #1001")
        try await first.stopKeepingData()

        let second = try await TestServer.start(root: first.root, seed: false)
        let again = try await second.login("ann@acme.test")
        #expect(try await again.command("HISTORY #1001") == before)
        #expect(try await again.command("TICKETS").first?.hasSuffix(" 0 * :Before the restart") == true)
        #expect(try await again.command("CALLS").first?.hasSuffix(":ring me") == true)
        #expect(try await again.command("ME").contains("RPL ME name :Ann Restarted"))
        #expect(try await again.command("NEW After the restart").first?.hasPrefix("OK NEW #1002") == true)
        await again.close()
        try await second.stop()
    }
}
