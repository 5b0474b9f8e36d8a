import DesklineCore
import Foundation
import Testing

/// What a change to a ticket or a call *is*, decided in Core (every store applies these).
struct TicketRulesTests {
    let tenant = TenantID(rawValue: "acme")!
    let customer = CustomerID(rawValue: "c1")!
    let start = Date(timeIntervalSince1970: 1_700_000_000)

    func draft(_ kind: TicketEntry.Kind, _ text: String) -> TicketEntryDraft {
        TicketEntryDraft(kind: kind, authorId: UserID(rawValue: "u2")!, authorName: "Amy", authorRole: .agent, text: text)
    }

    @Test func ticketsAreNumberedFrom1001AndCallsFrom1() {
        #expect(TicketID.next(after: nil) == TicketID(1001))
        #expect(TicketID.next(after: TicketID(1001)) == TicketID(1002))
        #expect(TicketID.next(after: TicketID(7)) == TicketID(1001))
        #expect(CallID.next(after: nil) == CallID(1))
        #expect(CallID.next(after: CallID(41)) == CallID(42))
    }

    @Test func entriesAreNumberedAndNotesCountApartWithoutMovingWhatCustomersSee() {
        var ticket = Ticket.opened(TicketID(1001), in: tenant, by: customer, subject: "Printer", at: start)
        #expect(ticket.status == .open && ticket.lastSeq == 0 && ticket.createdAt == start && ticket.updatedAt == start)
        let later = start.addingTimeInterval(60)
        let first = ticket.append(draft(.message, "hello"), at: later)
        #expect(first.seq == 1 && first.note == nil && first.messageID == "1" && first.at == later)
        #expect(ticket.lastSeq == 1 && ticket.updatedAt == later)

        let noteTime = later.addingTimeInterval(60)
        let note = ticket.append(draft(.note, "internal"), at: noteTime)
        let second = ticket.append(draft(.note, "internal too"), at: noteTime)
        #expect(note.messageID == "1.1" && second.messageID == "1.2")
        // A note moves neither the customer-visible number nor the time customers see.
        #expect(ticket.lastSeq == 1 && ticket.updatedAt == later && ticket.noteCount == 2)

        let status = ticket.append(draft(.status, "resolved"), at: noteTime)
        #expect(status.messageID == "2" && ticket.updatedAt == noteTime)
        #expect([first, note, second, status].map(\.position) == [EntryPosition(1), EntryPosition(1, note: 1), EntryPosition(1, note: 2), EntryPosition(2)])
    }

    @Test func customerAndUserIdsAreNumbered() {
        #expect(CustomerID.numbered(3).rawValue == "c3")
        #expect(UserID.numbered(12).rawValue == "u12")
    }

    @Test func aCallIsFiledRequested() {
        let call = CallRequest.filed(CallID(1), in: tenant, by: customer, about: TicketID(1001), phone: "+1 555 0100", note: "after 5", at: start)
        #expect(call.status == .requested && call.createdAt == start && call.updatedAt == start && call.ticketId == TicketID(1001))
    }
}

/// Errors whose usual wording names a command carry their data, and their own text names none
/// (a dialect words them: issue #17).
struct ErrorReasonTests {
    @Test func errorsThatADialectWordsCarryTheirDataAndNameNoCommand() {
        let errors: [(DesklineError, DesklineError.Reason, String)] = [
            (.noSuchTicket(TicketID(1001)), .noSuchTicket(TicketID(1001)), "NO_SUCH_TICKET"),
            (.ticketClosed(TicketID(1002)), .ticketClosed(TicketID(1002)), "TICKET_CLOSED"),
            (.noPhone, .noPhone, "NO_PHONE"),
            (.customerHasNoLogin(CustomerID(rawValue: "c3")!), .customerHasNoLogin(CustomerID(rawValue: "c3")!), "NOT_FOUND"),
            (.callNotAccepted(CallID(4)), .callNotAccepted(CallID(4)), "CONFLICT"),
        ]
        let commands = ["TICKETS", "NEW", "PROFILE", "CALL ", "CUSTOMER LOGIN", "ACCEPT"]
        for (error, reason, code) in errors {
            #expect(error.reason == reason)
            #expect(error.code == code)
            #expect(!commands.contains { error.message.contains($0) }, "\(error.message)")
        }
        #expect(DesklineError.conflict("x").reason == nil)
    }
}

/// A store commits a change only if it is about what it was asked to change (Change.validate).
struct ChangeValidationTests {
    let acme = TenantID(rawValue: "acme")!
    let at = Date(timeIntervalSince1970: 1_800_000_000)

    func ticket(_ id: Int, tenant: TenantID? = nil, customer: String = "c1") -> Ticket {
        Ticket.opened(TicketID(id), in: tenant ?? acme, by: CustomerID(rawValue: customer)!, subject: "s", at: at)
    }

    func event(_ ticket: Ticket?, tenant: TenantID? = nil, seq: Int? = nil, call: CallRequest? = nil) -> TicketEvent {
        TicketEvent(kind: call == nil ? .created : .call, tenantId: tenant ?? acme, ticket: ticket, call: call,
                    actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer), at: at, seq: seq)
    }

    @Test func aChangeAboutItsOwnTicketOrCallPasses() throws {
        let t = ticket(1001)
        try Change(ticket: t, event: event(t)).validate(.ticket(TicketID(1001), customer: CustomerID(rawValue: "c1")!), in: acme)
        let call = CallRequest.filed(CallID(1), in: acme, by: CustomerID(rawValue: "c1")!, about: nil, phone: "1", note: nil, at: at)
        try Change(call: call, event: event(nil, call: call)).validate(.call(CallID(1), customer: nil), in: acme)
    }

    @Test func aChangeAboutSomethingElseIsRefused() {
        let globex = TenantID(rawValue: "globex")!
        let t = ticket(1001)
        let call = CallRequest.filed(CallID(1), in: acme, by: CustomerID(rawValue: "c1")!, about: nil, phone: "1", note: nil, at: at)
        let refused: [(Change, Change.Subject)] = [
            (Change(ticket: ticket(1002)), .ticket(TicketID(1001), customer: nil)),
            (Change(ticket: ticket(1001, tenant: globex)), .ticket(TicketID(1001), customer: nil)),
            (Change(ticket: ticket(1001, customer: "c2")), .ticket(TicketID(1001), customer: CustomerID(rawValue: "c1")!)),
            (Change(ticket: t, event: event(t, tenant: globex)), .ticket(TicketID(1001), customer: nil)),
            (Change(ticket: t, event: event(t, seq: 7)), .ticket(TicketID(1001), customer: nil)),
            (Change(ticket: t, event: event(ticket(1002))), .ticket(TicketID(1001), customer: nil)),
            (Change(ticket: t, call: call), .ticket(TicketID(1001), customer: nil)),
            (Change(), .ticket(TicketID(1001), customer: nil)),
            (Change(call: call, event: event(t)), .call(CallID(1), customer: nil)),
            (Change(ticket: t, call: call), .call(CallID(1), customer: nil)),
            (Change(call: call), .call(CallID(2), customer: nil)),
        ]
        for (change, subject) in refused {
            #expect(throws: DesklineError.self, "\(change)") { try change.validate(subject, in: acme) }
        }
    }
}
