import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

/// The hand-written JSON of ticket and inbox lines is byte for byte what JSONEncoder writes.
struct JSONLineTests {
    let awkward = ["", "plain", "quote \" and \\ backslash", "slash / and </script>", "tab\there\nnew line\r\u{8}\u{C}",
                   "\u{0}\u{1}\u{1F}\u{7F}", "é ü 漢字 🎉 \u{301}", "\u{2028}\u{2029}\u{FEFF}", "\\u0041", String(repeating: "x", count: 3000)]

    func encoded<T: Encodable>(_ value: T) throws -> Data { try FileStore.line(value) }

    @Test func ticketLinesMatchTheEncoder() throws {
        for (i, text) in awkward.enumerated() {
            var ticket = Ticket(id: TicketID(1000 + i), tenantId: TenantID(unchecked: "acme"), customerId: CustomerID(unchecked: "c\(i)"),
                                subject: text, status: TicketStatus.allCases[i % TicketStatus.allCases.count],
                                createdAt: Date(timeIntervalSince1970: 1_795_618_463.395), updatedAt: Date(timeIntervalSince1970: Double(i) * 1e8 + 0.007),
                                lastSeq: i, customerUnread: i * 3)
            if i % 2 == 0 {
                ticket.assigneeId = UserID(unchecked: "u\(i)")
                ticket.assigneeName = text
                ticket.noteCount = i
            }
            let entry = TicketEntry(seq: i, note: i % 3 == 0 ? i : nil, kind: [.message, .note, .status][i % 3],
                                    authorId: UserID(unchecked: "u1"), authorName: text, authorRole: Role.allCases[i % 3],
                                    text: text, at: Date(timeIntervalSince1970: 1_795_618_463.5))
            for line in [TicketLogLine(ticket: ticket, entry: entry), TicketLogLine(ticket: ticket, entry: nil)] {
                let fast = JSONLine.line(line)
                #expect(fast == (try encoded(line)), "\(String(decoding: fast, as: UTF8.self))")
            }
        }
    }

    @Test func inboxLinesMatchTheEncoder() throws {
        for (i, text) in awkward.enumerated() {
            let n = DesklineCore.Notification(id: i + 1, type: text.isEmpty ? "message" : text, ticket: i % 2 == 0 ? TicketID(1001) : nil,
                                              call: i % 3 == 0 ? CallID(i) : nil, actorName: text, text: text,
                                              at: Date(timeIntervalSince1970: 1_795_618_463.001))
            let fast = JSONLine.line(n)
            #expect(fast == (try encoded(n)), "\(String(decoding: fast, as: UTF8.self))")
        }
    }

    @Test func eventLinesMatchTheEncoder() throws {
        for (i, text) in awkward.enumerated() {
            let at = Date(timeIntervalSince1970: 1_795_618_463.25)
            let ticket = Ticket(id: TicketID(1001), tenantId: TenantID(unchecked: "acme"), customerId: CustomerID(unchecked: "c1"),
                                subject: text, status: .open, createdAt: at, updatedAt: at, lastSeq: i)
            let entry = TicketEntry(seq: i, note: i % 2 == 0 ? 1 : nil, kind: .message, authorId: UserID(unchecked: "u1"),
                                    authorName: text, authorRole: .customer, text: text, at: at)
            var call = CallRequest.filed(CallID(i + 1), in: TenantID(unchecked: "acme"), by: CustomerID(unchecked: "c1"),
                                         about: i % 2 == 0 ? TicketID(1001) : nil, phone: "+1 555", note: text, at: at)
            call.agentName = i % 3 == 0 ? text : nil
            var event = TicketEvent(kind: [.created, .entry, .call][i % 3], tenantId: TenantID(unchecked: "acme"),
                                    ticket: i % 4 == 3 ? nil : ticket, entry: i % 3 == 1 ? entry : nil, call: i % 3 == 2 ? call : nil,
                                    actor: Actor(id: UserID(unchecked: "u2"), name: text, role: .agent), at: at,
                                    customerUserId: i % 2 == 0 ? UserID(unchecked: "u1") : nil)
            event.recipients = (0..<(i % 3)).map { UserID(unchecked: "u\($0 + 3)") }
            event.originSession = i % 2 == 0 ? SessionID(node: "0123456789abcdef", number: i) : nil
            event.seq = i % 5 == 4 ? nil : i + 1
            let fast = try JSONLine.line(event)
            #expect(fast == (try encoded(event)), "\(String(decoding: fast, as: UTF8.self))")
        }
    }
}
