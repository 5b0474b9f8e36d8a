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
}
