import DesklineCore
@testable import DesklineStore
import Testing

/// Live pushes and inboxes, with several real clients at once. Seed: acme has customers Ann (u1)
/// and Bob, agents Amy (u2) and Abe (u5), admin Ada (u3); globex has customer Gus, agent Gia and
/// admin Gil.
@Suite struct NotificationTests {
    @Test func newTicketGoesToEveryAdminOfTheTenantOnly() async throws {
        try await withServer { server in
            let ada = try await server.login("ada@acme.test")
            let gil = try await server.login("gil@globex.test")
            let amy = try await server.login("amy@acme.test")
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Printer on fire")
            let event = try await ada.expectLine(startingWith: "EVENT NEW")
            #expect(event.hasPrefix("EVENT NEW #1001 20"))
            #expect(event.hasSuffix(#" c1 Ann\sCustomer :Printer on fire"#))
            #expect(try await amy.drain().isEmpty) // agents are told when customers write, not on NEW
            #expect(try await gil.drain().isEmpty) // never across tenants
            #expect(try await ann.drain().isEmpty) // not echoed to the session that did it
            for c in [ada, gil, amy, ann] { await c.close() }
        }
    }

    @Test func messageInUnassignedTicketReachesEveryAgentAndWaitsForOfflineOnes() async throws {
        try await withServer { server in
            let amy = try await server.login("amy@acme.test")
            let gia = try await server.login("gia@globex.test")
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Help")
            _ = try await ann.command("MSG #1001 is anyone there?")
            let live = try await amy.expectLine(startingWith: "EVENT TICKET")
            #expect(live.hasPrefix("EVENT TICKET #1001 1 20"))
            #expect(live.hasSuffix(#" message customer Ann\sCustomer :is anyone there?"#))
            #expect(try await gia.drain().isEmpty)

            // Abe was offline: the inbox has it, and LOGIN says so.
            let abe = try await server.guest()
            try await abe.send("LOGIN abe@acme.test \(TestServer.password)")
            #expect(try await abe.readLine()?.hasPrefix("OK LOGIN agent acme u5") == true)
            #expect(try await abe.readLine() == "EVENT NOTIFICATIONS 1 :You have 1 unread notifications. NOTIFICATIONS lists them.")
            let list = try await abe.command("NOTIFICATIONS")
            #expect(list.count == 2)
            #expect(list[0].hasPrefix("RPL NOTIFICATIONS 1 20"))
            #expect(list[0].hasSuffix(#" unread message #1001 Ann\sCustomer :is anyone there?"#))
            #expect(try await abe.command("READ 1") == ["OK READ 1 :Notification 1 read"])
            #expect(try await abe.command("NOTIFICATIONS") == ["OK NOTIFICATIONS 0 :0 notifications"])
            #expect(try await abe.command("NOTIFICATIONS all").first?.contains(" read message #1001 ") == true)
            #expect(try await abe.command("READ 7").last == "ERR READ NOT_FOUND :You have no notification 7.")
            for c in [amy, gia, ann, abe] { await c.close() }
        }
    }

    @Test func assignedTicketGoesToTheAssigneeOnlyInEverySession() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Assigned")
            let amy1 = try await server.login("amy@acme.test")
            let amy2 = try await server.login("amy@acme.test")
            let abe = try await server.login("abe@acme.test")
            #expect(try await amy1.command("ASSIGN #1001 me").first?.hasPrefix("OK ASSIGN #1001 1 Amy\\sAgent") == true)
            // The customer is told about the assignment; Amy's other session sees it too.
            #expect(try await ann.expectLine(startingWith: "EVENT TICKET").hasSuffix(#" status agent Amy\sAgent :assigned to Amy Agent"#))
            #expect(try await amy2.expectLine(startingWith: "EVENT TICKET").hasSuffix(":assigned to Amy Agent"))
            _ = try await ann.command("MSG #1001 for Amy")
            for amy in [amy1, amy2] {
                #expect(try await amy.expectLine(startingWith: "EVENT TICKET").hasSuffix(":for Amy"))
            }
            #expect(try await abe.drain().isEmpty)
            for c in [ann, amy1, amy2, abe] { await c.close() }
        }
    }

    /// An agent reached by every route at once (notified of the message as its assignee, and
    /// following the ticket too), in two native sessions and an IRC one, is pushed each message
    /// once in each; so is the customer's other session. Two messages committed in one batch:
    /// each event finds its audience anew.
    @Test func aSessionReachedByEveryRouteIsPushedAnEventOnce() async throws {
        try await withServer { server in
            let ann1 = try await server.login("ann@acme.test")
            let ann2 = try await server.login("ann@acme.test")
            _ = try await ann1.command("NEW Only once")
            let amy1 = try await server.login("amy@acme.test")
            let amy2 = try await server.login("amy@acme.test")
            let (amy3, _) = try await server.ircLogin("amy@acme.test")
            #expect(try await amy1.command("ASSIGN #1001 me").first?.hasPrefix("OK ASSIGN #1001 1 ") == true)
            for amy in [amy1, amy2] {
                #expect(try await amy.command("JOIN #1001").last == "OK JOIN #1001 open :Following #1001: Only once")
                _ = try await amy.drain()
            }
            _ = try await amy3.irc("JOIN #1001")
            _ = try await amy3.sync()
            _ = try await ann1.drain()
            _ = try await ann2.drain()

            // Both messages wait for the held writer, then are committed in one batch.
            let writer = server.store.writer(TenantID(unchecked: "acme"))
            let release = await writer.hold()
            try await ann1.sendRaw(Array("MSG #1001 first\nMSG #1001 second\n".utf8))
            let deadline = ContinuousClock.now + .seconds(10)
            while writer.queuedJobs < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
            let before = server.store.writeStatistics()
            release()
            #expect(try await ann1.readReply() == ["OK MSG #1001 2 open :Message 2 added to #1001"])
            #expect(try await ann1.readReply() == ["OK MSG #1001 3 open :Message 3 added to #1001"])
            #expect(server.store.writeStatistics().commits - before.commits == 1)
            for client in [amy1, amy2, ann2] {
                let lines = try await client.drain(for: .seconds(1))
                for n in 2...3 { #expect(lines.filter { $0.hasPrefix("EVENT TICKET #1001 \(n) ") }.count == 1, "\(lines)") }
            }
            let irc = try await amy3.sync()
            for text in ["first", "second"] { #expect(irc.filter { $0.hasSuffix(" :\(text)") }.count == 1, "\(irc)") }
            for c in [ann1, ann2, amy1, amy2, amy3] { await c.close() }
        }
    }

    @Test func repliesReachTheCustomerButNotesNeverDo() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Notes")
            _ = try await ann.command("MSG #1001 first")
            let amy = try await server.login("amy@acme.test")
            #expect(try await amy.readLine() == "EVENT NOTIFICATIONS 1 :You have 1 unread notifications. NOTIFICATIONS lists them.")
            #expect(try await amy.command("NOTE #1001 customer sounds annoyed") == ["OK NOTE #1001 1.1 :Note 1.1 added to #1001"])
            #expect(try await amy.command("MSG #1001 On it!").first == "OK MSG #1001 2 open :Message 2 added to #1001")
            // The customer gets the reply, not the note, and sees no gap in the numbering.
            let pushed = try await ann.expectLine(startingWith: "EVENT TICKET")
            #expect(pushed.hasPrefix("EVENT TICKET #1001 2 "))
            #expect(pushed.hasSuffix(#" message agent Amy\sAgent :On it!"#))
            #expect(try await ann.drain().isEmpty)
            let history = try await ann.command("HISTORY #1001")
            #expect(history.count == 3)
            #expect(!history.joined().contains("annoyed"))
            #expect(try await ann.command("SHOW #1001").contains("RPL SHOW #1001 entries :2"))
            let inbox = try await ann.command("NOTIFICATIONS all")
            #expect(!inbox.joined().contains("annoyed"))
            #expect(inbox.first?.hasSuffix(#" message #1001 Amy\sAgent :On it!"#) == true)
            // Staff see everything, in order, and the pushed line is the HISTORY line.
            let staffHistory = try await amy.command("HISTORY #1001")
            #expect(staffHistory.dropLast().map { $0.split(separator: " ")[3] } == ["1", "1.1", "2"])
            #expect(history[1] == "RPL HISTORY" + pushed.dropFirst("EVENT TICKET".count))
            for c in [ann, amy] { await c.close() }
        }
    }

    @Test func joinFollowsATicketLiveAndPartStops() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Follow me")
            let ada = try await server.login("ada@acme.test")
            _ = try await ada.drain() // EVENT NEW
            #expect(try await ada.command("JOIN #1001") == ["OK JOIN #1001 open :Following #1001: Follow me"])
            #expect(try await ada.command("JOIN #1001") == ["OK JOIN #1001 open :Already following #1001"])
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("NOTE #1001 internal")
            #expect(try await ada.expectLine(startingWith: "EVENT TICKET").hasSuffix(" note agent Amy\\sAgent :internal"))
            #expect(try await ada.command("PART #1001") == ["OK PART #1001 :No longer following #1001"])
            _ = try await amy.command("NOTE #1001 second")
            #expect(try await ada.drain().isEmpty)
            #expect(try await ada.command("PART #1001").last == "ERR PART NOT_FOUND :You are not following #1001.")
            // A ticket of another tenant cannot be joined.
            let gil = try await server.login("gil@globex.test")
            #expect(try await gil.command("JOIN #1001").last == "ERR JOIN NO_SUCH_TICKET :No ticket #1001 in this helpdesk. QUEUE lists its tickets.")
            for c in [ann, ada, amy, gil] { await c.close() }
        }
    }

    @Test func callRequestsGoToTheAssigneeOrEveryAgent() async throws {
        try await withServer { server in
            let amy = try await server.login("amy@acme.test")
            let abe = try await server.login("abe@acme.test")
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Call")
            _ = try await ann.command("CALL please ring")
            for agent in [amy, abe] {
                let event = try await agent.expectLine(startingWith: "EVENT CALL")
                #expect(event.hasPrefix("EVENT CALL 1 requested 20"))
                #expect(event.hasSuffix(#" * Ann\sCustomer +1\s555\s0101 :please ring"#))
            }
            _ = try await amy.command("ASSIGN #1001 me")
            _ = try await ann.drain()
            _ = try await ann.command("CALL #1001 about this one")
            #expect(try await amy.expectLine(startingWith: "EVENT CALL 2 ").hasSuffix(":about this one"))
            #expect(try await abe.drain().filter { $0.hasPrefix("EVENT CALL") }.isEmpty)

            // The agents' side: the queue, accepting (the customer is told), and done.
            let queue = try await abe.command("CALLS")
            #expect(queue.count == 3)
            #expect(queue[0].hasPrefix("RPL CALLS 1 requested 20"))
            #expect(queue[0].hasSuffix(#" * +1\s555\s0101 c1 * :please ring"#))
            #expect(try await abe.command("CALL ACCEPT 1") == ["OK CALL 1 accepted +1\\s555\\s0101 :Call 1 is yours: phone +1 555 0101"])
            let told = try await ann.expectLine(startingWith: "EVENT CALL 1 accepted")
            #expect(told.hasSuffix(#" * Abe\sAgent +1\s555\s0101 :"#))
            #expect(try await amy.command("CALL ACCEPT 1").last == "ERR CALL CONFLICT :Call 1 was already accepted by Abe Agent.")
            #expect(try await amy.command("CALL DONE 1").last == "ERR CALL CONFLICT :Call 1 was accepted by Abe Agent; they mark it done.")
            #expect(try await abe.command("CALLS mine").count == 2)
            #expect(try await abe.command("CALL DONE 1 spoke, all good") == ["OK CALL 1 done +1\\s555\\s0101 :Call 1 done"])
            #expect(try await ann.expectLine(startingWith: "EVENT CALL 1 done").hasSuffix(":spoke, all good"))
            #expect(try await ann.command("CALLS").first?.hasPrefix("RPL CALLS 2 requested") == true)
            #expect(try await abe.command("CALLS").count == 2) // only call 2 is still open
            #expect(try await abe.command("CALL RING 2").last == "ERR CALL INVALID_ARGUMENT :'RING' is not ACCEPT or DONE. Usage: CALL ACCEPT|DONE <call> [<outcome>]")
            for c in [amy, abe, ann] { await c.close() }
        }
    }

    /// Core leaves these errors' wording to the dialect (issue #17); the native dialect names its
    /// commands in them, byte for byte as before.
    @Test func theNativeDialectWordsTheErrorsThatNameItsCommands() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            let gus = try await server.login("gus@globex.test")
            let ada = try await server.login("ada@acme.test")
            _ = try await ann.command("NEW Printer")
            _ = try await ann.command("CLOSE #1001")
            #expect(try await ann.command("MSG #1001 again").last == "ERR MSG TICKET_CLOSED :Ticket #1001 is closed. Open a new one with NEW <subject>.")
            #expect(try await ann.command("SHOW #1002").last == "ERR SHOW NO_SUCH_TICKET :No ticket #1002 that you can see. TICKETS lists yours.")
            #expect(try await gus.command("CALL").last
                    == "ERR CALL NO_PHONE :There is no phone number on your record. Add one with PROFILE phone <number>, then CALL again.")
            _ = try await ann.command("CALL")
            #expect(try await ada.command("CALL DONE 1").last == "ERR CALL CONFLICT :Accept call 1 first: CALL ACCEPT 1.")
            let added = try await ada.command("CUSTOMER NEW cy@acme.test none Cy Nologin").last ?? ""
            let customer = try #require(added.split(separator: " ").dropFirst(3).first)
            #expect(try await ada.command("CUSTOMER PASSWORD \(customer)").last
                    == "ERR CUSTOMER NOT_FOUND :Customer \(customer) has no login yet: CUSTOMER LOGIN \(customer).")
            for c in [ann, gus, ada] { await c.close() }
        }
    }

    @Test func customersNeverReceiveOtherCustomersEvents() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            let bob = try await server.login("bob@acme.test")
            let gus = try await server.login("gus@globex.test")
            _ = try await bob.command("NEW Bob's")
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("MSG #1001 reply to Bob")
            _ = try await amy.command("STATUS #1001 resolved")
            #expect(try await bob.expectLine(startingWith: "EVENT TICKET").hasSuffix(":reply to Bob"))
            #expect(try await ann.drain().isEmpty)
            #expect(try await gus.drain().isEmpty)
            for c in [ann, bob, gus, amy] { await c.close() }
        }
    }
}

extension NotificationTests {
    @Test func staffHistoryPagesThroughNotesWithoutLosingEntries() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Paging with notes")
            _ = try await ann.command("MSG #1001 one")
            _ = try await ann.command("MSG #1001 two")
            let amy = try await server.login("amy@acme.test")
            for n in 1...4 { _ = try await amy.command("NOTE #1001 note \(n)") }
            _ = try await ann.command("MSG #1001 three")
            _ = try await amy.drain() // the notifications and the push of "three"
            func ids(_ reply: [String]) -> [String] { reply.filter { $0.hasPrefix("RPL ") }.map { String($0.split(separator: " ")[3]) } }
            #expect(ids(try await amy.command("HISTORY #1001 before 3 3")) == ["2.2", "2.3", "2.4"])
            #expect(ids(try await amy.command("HISTORY #1001 before 2.2 3")) == ["1", "2", "2.1"])
            #expect(ids(try await amy.command("HISTORY #1001 after 2 2")) == ["2.1", "2.2"])
            #expect(ids(try await amy.command("HISTORY #1001 after 2.2 10")) == ["2.3", "2.4", "3"])
            #expect(ids(try await ann.command("HISTORY #1001 after 1")) == ["2", "3"])
            #expect(try await amy.command("HISTORY #1001 before 2.x").last?.hasPrefix("ERR HISTORY INVALID_ARGUMENT") == true)
            for c in [ann, amy] { await c.close() }
        }
    }

    @Test func readMarksCatchUpInAnyOrder() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Inbox")
            for n in 1...3 { _ = try await ann.command("MSG #1001 m\(n)") }
            let abe = try await server.guest()
            _ = try await abe.command("LOGIN abe@acme.test \(TestServer.password)")
            #expect(try await abe.readLine() == "EVENT NOTIFICATIONS 3 :You have 3 unread notifications. NOTIFICATIONS lists them.")
            _ = try await abe.command("READ 2")
            #expect(try await abe.command("NOTIFICATIONS").dropLast().map { String($0.split(separator: " ")[2]) } == ["1", "3"])
            _ = try await abe.command("READ 1")
            #expect(try await abe.command("NOTIFICATIONS").dropLast().map { String($0.split(separator: " ")[2]) } == ["3"])
            _ = try await abe.command("READ 3")
            #expect(try await abe.command("NOTIFICATIONS") == ["OK NOTIFICATIONS 0 :0 notifications"])
            #expect(try await abe.command("NOTIFICATIONS all").count == 4)
            for c in [ann, abe] { await c.close() }
        }
    }

    @Test func customerClosingAndStaffStatusChangesTellTheOtherSide() async throws {
        try await withServer { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Status")
            let amy = try await server.login("amy@acme.test")
            _ = try await amy.command("ASSIGN #1001 me")
            // (Read, not drained: under load the push may come after a drain's quiet window.)
            #expect(try await ann.expectLine(startingWith: "EVENT TICKET").contains("assigned to Amy"))
            let abe = try await server.login("abe@acme.test")
            _ = try await abe.command("STATUS #1001 resolved")
            // The customer and the assignee are told; Abe did it himself.
            #expect(try await ann.expectLine(startingWith: "EVENT TICKET").hasSuffix(#" status agent Abe\sAgent :resolved"#))
            #expect(try await amy.expectLine(startingWith: "EVENT TICKET").hasSuffix(":resolved"))
            _ = try await ann.command("CLOSE #1001")
            #expect(try await amy.expectLine(startingWith: "EVENT TICKET").hasSuffix(#" status customer Ann\sCustomer :closed"#))
            #expect(try await amy.command("NOTIFICATIONS").dropLast().map { String($0.split(separator: ":").last!) } == ["resolved", "closed"])
            for c in [ann, amy, abe] { await c.close() }
        }
    }
}
