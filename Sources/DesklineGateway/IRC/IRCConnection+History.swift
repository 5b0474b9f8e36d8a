import DesklineCore
import DesklineProtocol
import Foundation

// draft/chathistory over a ticket's entries: CHATHISTORY LATEST/BEFORE/AFTER/AROUND/BETWEEN
// with msgid= (a ticket's message id, `1001.3`, `1001.3.1` for a note) or timestamp=
// references, and TARGETS (tickets are channels; there are no private conversations).

extension IRCConnection {
    /// A message reference of CHATHISTORY.
    enum HistoryReference {
        case none
        case position(EntryPosition)
        case time(Date)

        init?(_ raw: String, ticket: TicketID) {
            if raw == "*" {
                self = .none
            } else if raw.hasPrefix("msgid="), case let id = raw.dropFirst(6), id.hasPrefix("\(ticket.number).") ,
                      let position = EntryPosition(parsing: String(id.dropFirst("\(ticket.number).".count))) {
                self = .position(position)
            } else if raw.hasPrefix("timestamp="), let date = Timestamp.parse(String(raw.dropFirst(10))) {
                self = .time(date)
            } else {
                return nil
            }
        }
    }

    /// Entries read for a reference by time, at most (a ticket longer than this is searched in
    /// its latest entries).
    static let historySearchLimit = 2000

    func chathistory(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        let params = message.params
        let sub = params.first?.uppercased() ?? ""
        func fail(_ code: String, _ context: [String], _ text: String) -> PreparedLine {
            Self.answered([IRCLine(source: Self.serverName, "FAIL", ["CHATHISTORY", code] + context, trailing: text)], scope: scope)
        }
        if sub == "TARGETS" {
            return Self.answered(inBatch("draft/chathistory-targets", [], []), scope: scope)
        }
        let shape: Int // parameters after the subcommand: target, references..., limit
        switch sub {
        case "LATEST", "BEFORE", "AFTER", "AROUND": shape = 3
        case "BETWEEN": shape = 4
        default: return fail("INVALID_PARAMS", [String(sub.prefix(20))], "Unknown subcommand; use LATEST, BEFORE, AFTER, AROUND, BETWEEN or TARGETS")
        }
        guard params.count == shape + 1 else { return fail("INVALID_PARAMS", [sub], "Usage: CHATHISTORY \(sub) <target> <reference>\(shape == 4 ? " <reference>" : "") <limit>") }
        let target = params[1]
        guard let id = Self.ticket(target) else { return fail("INVALID_TARGET", [sub, target], "Tickets are channels: #<number>") }
        let refs = params[2..<shape].map { HistoryReference($0, ticket: id) }
        guard refs.allSatisfy({ $0 != nil }) else {
            return fail("INVALID_PARAMS", [sub], "A reference is *, msgid=\(id.number).<n> or timestamp=<ISO 8601>")
        }
        if sub != "LATEST", refs.contains(where: { if case .none? = $0 { true } else { false } }) {
            return fail("INVALID_PARAMS", [sub], "\(sub) needs a msgid= or timestamp= reference")
        }
        guard let limit = Int(params[shape]), limit > 0 else { return fail("INVALID_PARAMS", [sub], "The limit must be a positive number") }
        let count = min(limit, TicketService.maximumHistoryLimit)
        let references = refs.map { $0! }
        return .work(pipelines: false) { _ in
            do throws(DesklineError) {
                let entries = try await self.history(sub, id, references, count, scope: scope)
                let lines = entries.map { self.entryLine($0, in: id, tenant: scope.tenantId, replay: true) }
                return LineOutcome(lines: self.inBatch("chathistory", [target], lines).map(\.encoded), scope: scope)
            } catch {
                let code = error.reason.map { _ in "INVALID_TARGET" } ?? "MESSAGE_ERROR"
                let line = IRCLine(source: Self.serverName, "FAIL", ["CHATHISTORY", code, sub, target],
                                   trailing: code == "INVALID_TARGET" ? "No such channel" : NativeDialect.text(of: error))
                return LineOutcome(lines: [line.encoded], scope: scope)
            }
        }
    }

    private func history(_ sub: String, _ id: TicketID, _ refs: [HistoryReference], _ limit: Int,
                         scope: SessionScope) async throws(DesklineError) -> [TicketEntry] {
        let tickets = services.tickets
        // Message ids: one page straight from the log.
        switch (sub, refs[0]) {
        case ("LATEST", .none):
            return try await tickets.history(scope, id, before: nil, after: nil, limit: limit)
        case ("LATEST", .position(let p)):
            return try await tickets.history(scope, id, before: nil, after: nil, limit: limit).filter { p < $0.position }
        case ("BEFORE", .position(let p)):
            return try await tickets.history(scope, id, before: p, after: nil, limit: limit)
        case ("AFTER", .position(let p)):
            return try await tickets.history(scope, id, before: nil, after: p, limit: limit)
        default:
            break
        }
        // Times (and AROUND, BETWEEN): among the ticket's latest entries, in memory.
        var all: [TicketEntry] = []
        var before: EntryPosition?
        while all.count < Self.historySearchLimit {
            let page = try await tickets.history(scope, id, before: before, after: nil, limit: TicketService.maximumHistoryLimit)
            all = page + all
            guard page.count == TicketService.maximumHistoryLimit, let first = page.first else { break }
            before = first.position
        }
        func index(_ ref: HistoryReference, after: Bool) -> Int {
            switch ref {
            case .none: all.count
            case .position(let p): after ? all.firstIndex { p < $0.position } ?? all.count : all.firstIndex { !($0.position < p) } ?? all.count
            case .time(let t): after ? all.firstIndex { $0.at > t } ?? all.count : all.firstIndex { $0.at >= t } ?? all.count
            }
        }
        switch sub {
        case "LATEST": return Array(all[index(refs[0], after: true)...].suffix(limit))
        case "BEFORE": return Array(all[..<index(refs[0], after: false)].suffix(limit))
        case "AFTER": return Array(all[index(refs[0], after: true)...].prefix(limit))
        case "AROUND":
            let middle = index(refs[0], after: false)
            let start = max(0, min(middle - limit / 2, all.count - limit))
            return Array(all[start..<min(all.count, start + limit)])
        default: // BETWEEN, either way round
            let (a, b) = (index(refs[0], after: true), index(refs[1], after: false))
            let (c, d) = (index(refs[1], after: true), index(refs[0], after: false))
            if a <= b { return Array(all[a..<b].prefix(limit)) }
            return c <= d ? Array(all[c..<d].suffix(limit)) : []
        }
    }
}
