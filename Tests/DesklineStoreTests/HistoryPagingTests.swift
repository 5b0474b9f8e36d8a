import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

/// HISTORY pages of long tickets: found by a binary search over the log, read alone, and exactly
/// what a scan of the whole log would return.
struct HistoryPagingTests {
    let root = NSTemporaryDirectory() + "deskline-history-" + UUID().uuidString
    let acme = TenantID(rawValue: "acme")!

    /// A reproducible random number generator (SplitMix64).
    struct Random: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A ticket log as the writer makes it: messages, status changes and notes, some lines
    /// without an entry (assignments); `text` gives each entry's text.
    func log(_ ticket: Int, lines count: Int, _ random: inout Random, text: (inout Random, Int) -> String) -> [(line: Data, entry: TicketEntry?)] {
        let at = Date(timeIntervalSince1970: 1_700_000_000)
        var state = Ticket(id: TicketID(ticket), tenantId: acme, customerId: CustomerID(rawValue: "c1")!, subject: "s", status: .open,
                           createdAt: at, updatedAt: at)
        var lines = [(JSONLine.line(TicketLogLine(ticket: state, entry: nil)), TicketEntry?.none)]
        for i in 1..<max(1, count) {
            var entry: TicketEntry?
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<5:
                state.lastSeq += 1
                entry = TicketEntry(seq: state.lastSeq, kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann",
                                    authorRole: .customer, text: text(&random, i), at: at)
            case 5:
                state.lastSeq += 1
                entry = TicketEntry(seq: state.lastSeq, kind: .status, authorId: UserID(rawValue: "u2")!, authorName: "Amy",
                                    authorRole: .agent, text: "status changed to pending", at: at)
            case 6..<9:
                state.noteCount = (state.noteCount ?? 0) + 1
                entry = TicketEntry(seq: state.lastSeq, note: state.noteCount, kind: .note, authorId: UserID(rawValue: "u2")!,
                                    authorName: "Amy", authorRole: .agent, text: text(&random, i), at: at)
            default:
                state.assigneeName = "Amy \(i)"
            }
            lines.append((JSONLine.line(TicketLogLine(ticket: state, entry: entry)), entry))
        }
        return lines
    }

    /// HISTORY by reading every entry: those after `after` and before `before` a viewer may
    /// see, the oldest `limit` of them after `after`, else the newest.
    func reference(_ entries: [TicketEntry], after: EntryPosition?, before: EntryPosition?, limit: Int, includeNotes: Bool) -> [TicketEntry] {
        let chosen = entries.filter { entry in
            (includeNotes || entry.isVisibleToCustomer) && after.map { entry.position > $0 } ?? true && before.map { entry.position < $0 } ?? true
        }
        return after == nil ? Array(chosen.suffix(limit)) : Array(chosen.prefix(limit))
    }

    func write(_ data: Data, _ ticket: Int) throws -> String {
        let dir = root + "/tenants/acme/tickets"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/\(ticket).jsonl"
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func everyPageIsWhatAScanOfTheWholeLogReturns() async throws {
        let store = try await FileStore(root: root)
        var random = Random(state: 16)
        for ticket in 1001...1030 {
            // Short texts, and now and then one longer than the search's reads, with characters
            // JSON escapes; now and then an empty line (readers skip it).
            let lines = log(ticket, lines: Int.random(in: 1...400, using: &random), &random) { random, i in
                Int.random(in: 0..<20, using: &random) == 0
                    ? String(repeating: "long \"é\"\n ", count: Int.random(in: 200...700, using: &random))
                    : "entry \(i) " + String(repeating: "x", count: Int.random(in: 0...300, using: &random))
            }
            var data = Data()
            var ends: [Int64] = [0]
            for (line, _) in lines {
                data += line
                if Int.random(in: 0..<50, using: &random) == 0 { data += Data("\n".utf8) }
                ends.append(Int64(data.count))
            }
            // Some logs have lines a batch has not committed yet (hidden from readers), some a
            // torn last line (a write that never finished).
            var visible = lines.count
            if Bool.random(using: &random) {
                visible = Int.random(in: 0...lines.count, using: &random)
            }
            if Bool.random(using: &random) {
                let torn = JSONLine.line(TicketLogLine(ticket: Ticket(id: TicketID(ticket), tenantId: acme, customerId: CustomerID(rawValue: "c1")!,
                                                                      subject: "s", status: .open, createdAt: Date(), updatedAt: Date()), entry: nil))
                data += torn.prefix(Int.random(in: 1..<torn.count, using: &random))
            }
            let path = try write(data, ticket)
            if visible < lines.count { store.visibility.hide(path, beyond: ends[visible]) }
            defer { store.visibility.reveal([path]) }

            let entries = lines[..<visible].compactMap(\.entry)
            let last = entries.last?.position ?? EntryPosition(0)
            var places = entries.map(\.position) + [EntryPosition(0), EntryPosition(last.seq + 1), EntryPosition(last.seq, note: last.note + 1)]
            for _ in 0..<10 {
                places.append(EntryPosition(Int.random(in: 0...(last.seq + 2), using: &random), note: Int.random(in: 0...(last.note + 2), using: &random)))
            }
            for _ in 0..<50 {
                let after = Bool.random(using: &random) ? places.randomElement(using: &random) : nil
                let before = Bool.random(using: &random) ? places.randomElement(using: &random) : nil
                let limit = Int.random(in: 1...25, using: &random), includeNotes = Bool.random(using: &random)
                let page = try await store.entries(of: TicketID(ticket), in: acme, after: after, before: before, limit: limit, includeNotes: includeNotes)
                let expected = reference(entries, after: after, before: before, limit: limit, includeNotes: includeNotes)
                let same = page == expected
                #expect(same, "ticket \(ticket) of \(lines.count) lines (\(visible) visible), after \(after?.description ?? "-") before \(before?.description ?? "-") limit \(limit) notes \(includeNotes): \(page.map(\.messageID)) instead of \(expected.map(\.messageID))")
            }
        }
    }

    /// What a page reads is what it returns plus a few lines per halving of the log, at any
    /// depth: the 3,000-entry log here is 1.3 MB, a page at most 64 KiB (about 40 KiB measured;
    /// the scan from the end that came before read up to all of the log). Memory follows: a page's buffers hold only what it read.
    @Test func aPageReadsAboutWhatItReturnsAtAnyDepth() async throws {
        let store = try await FileStore(root: root)
        var random = Random(state: 3)
        let lines = log(1001, lines: 3_000, &random) { _, i in "entry \(i): the printer on the third floor still jams after the update." }
        let path = try write(lines.reduce(Data()) { $0 + $1.line }, 1001)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        let entries = lines.compactMap(\.entry)
        let messages = entries.filter { $0.note == nil }.map(\.position)

        func read(after: EntryPosition? = nil, before: EntryPosition? = nil, includeNotes: Bool = true) async throws -> (page: [TicketEntry], bytes: Int) {
            let start = store.historyBytesRead.load(ordering: .relaxed)
            let page = try await store.entries(of: TicketID(1001), in: acme, after: after, before: before, limit: 20, includeNotes: includeNotes)
            #expect(page == reference(entries, after: after, before: before, limit: 20, includeNotes: includeNotes))
            return (page, store.historyBytesRead.load(ordering: .relaxed) - start)
        }
        let bound = 64 * 1024
        #expect(size > 16 * bound)
        for place in [messages[messages.count - 2], messages[messages.count / 2], messages[100], messages[2]] {
            #expect(try await read(before: place).bytes <= bound, "before \(place)")
            #expect(try await read(before: place, includeNotes: false).bytes <= bound, "before \(place), customer")
            #expect(try await read(after: place).bytes <= bound, "after \(place)")
        }
        // Paging through the whole ticket from the newest end: every page alike.
        var before: EntryPosition?
        var pages = 0, seen = 0
        while true {
            let (page, bytes) = try await read(before: before)
            guard let first = page.first else { break }
            #expect(bytes <= bound, "page \(pages) before \(before?.description ?? "-")")
            pages += 1
            seen += page.count
            before = first.position
        }
        #expect(seen == entries.count)
    }
}
