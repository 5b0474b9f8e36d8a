import DesklineCore
import DesklineProtocol

// Tickets and calls: TICKETS, NEW, SHOW, HISTORY, MSG, CLOSE, CALL, CALLS, and the caller's own
// PROFILE and PASSWD. Who may do what is decided in DesklineCore's services; these handlers only
// parse parameters and format replies.

extension Command {
    static let tickets: Command = Command(
        name: "TICKETS", access: .customers, parameters: [.optionalWord("status")],
        summary: "List your tickets, newest activity first; optionally only those with a status (open, pending, resolved, closed)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let status = try ctx.arguments["status"].map { (raw) throws(DesklineError) in try parseStatus(raw) }
        let list = try await ctx.services.tickets.list(try ctx.requireScope(), status: status)
        return list.map { t in
            ServerLine(.rpl, "TICKETS", [t.id.description, t.status.rawValue, Timestamp.format(t.updatedAt),
                                         String(t.customerUnread), t.assigneeName ?? ""], text: t.subject)
        } + [ServerLine(.ok, "TICKETS", [String(list.count)], text: "\(list.count) tickets")]
    }

    static let new: Command = Command(
        name: "NEW", access: .customers, parameters: [.text("subject")],
        summary: "Open a new ticket. Then write in it with MSG #<ticket> <text>."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let ticket = try await ctx.services.tickets.create(try ctx.requireScope(), subject: ctx.arguments.required("subject"))
        return [ServerLine(.ok, "NEW", [ticket.id.description, ticket.status.rawValue],
                           text: "Ticket \(ticket.id) opened: \(ticket.subject)")]
    }

    static let show: Command = Command(
        name: "SHOW", access: .loggedIn, parameters: [.word("ticket")],
        summary: "Show a ticket and its latest messages."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let (t, entries) = try await ctx.services.tickets.show(try ctx.requireScope(), id)
        let fields: [(String, String)] = [
            ("subject", t.subject), ("status", t.status.rawValue), ("customer", t.customerId.rawValue),
            ("assignee", t.assigneeName ?? ""), ("created", Timestamp.format(t.createdAt)),
            ("updated", Timestamp.format(t.updatedAt)), ("entries", String(t.lastSeq)),
        ]
        return fields.map { ServerLine(.rpl, "SHOW", [t.id.description, $0.0], text: $0.1) }
            + entries.map { entryLine("SHOW", t.id, $0, key: "entry") }
            + [ServerLine(.ok, "SHOW", [t.id.description], text: "End of SHOW (the latest \(TicketService.showEntries) entries; HISTORY pages through all)")]
    }

    static let history: Command = Command(
        name: "HISTORY", access: .loggedIn,
        parameters: [.word("ticket"), .optionalWord("before|after"), .optionalWord("msgid"), .optionalWord("limit")],
        summary: "Page through a ticket's messages, oldest first: the latest ones, or those before/after a message id.",
        usage: "HISTORY <ticket> [before|after <msgid>] [<limit>]"
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        var rest = ctx.message.params.dropFirst()
        var before: EntryPosition?
        var after: EntryPosition?
        if let direction = rest.first?.lowercased(), direction == "before" || direction == "after" {
            rest = rest.dropFirst()
            guard let raw = rest.first, let seq = EntryPosition(parsing: raw) else {
                throw .invalidArgument("\(direction) needs a message id. Usage: HISTORY <ticket> [before|after <msgid>] [<limit>]")
            }
            if direction == "before" { before = seq } else { after = seq }
            rest = rest.dropFirst()
        }
        var limit: Int?
        if let raw = rest.first {
            guard let n = Int(raw) else {
                throw .invalidArgument("'\(raw.prefix(20))' is not a limit. Usage: HISTORY <ticket> [before|after <msgid>] [<limit>]")
            }
            limit = n
            rest = rest.dropFirst()
        }
        guard rest.isEmpty else {
            throw .invalidArgument("Too many parameters. Usage: HISTORY <ticket> [before|after <msgid>] [<limit>]")
        }
        let entries = try await ctx.services.tickets.history(try ctx.requireScope(), id, before: before, after: after, limit: limit)
        return entries.map { entryLine("HISTORY", id, $0) }
            + [ServerLine(.ok, "HISTORY", [id.description, String(entries.count)], text: "\(entries.count) entries")]
    }

    static let msg: Command = Command(
        name: "MSG", access: .loggedIn, parameters: [.word("ticket"), .text("text")],
        summary: "Write in a ticket. Writing in a resolved ticket reopens it; closed tickets take no more messages.",
        pipelines: true
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let (ticket, entry) = try await ctx.services.tickets.post(try ctx.requireScope(), id, text: ctx.arguments.required("text"),
                                                              whenQueued: ctx.whenQueued)
        return [ServerLine(.ok, "MSG", [ticket.id.description, String(entry.seq), ticket.status.rawValue],
                           text: "Message \(entry.seq) added to \(ticket.id)")]
    }

    static let close: Command = Command(
        name: "CLOSE", access: .customers, parameters: [.word("ticket")],
        summary: "Close one of your tickets for good."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let ticket = try await ctx.services.tickets.close(try ctx.requireScope(), try parseTicket(ctx.arguments.required("ticket")))
        return [ServerLine(.ok, "CLOSE", [ticket.id.description, ticket.status.rawValue], text: "Ticket \(ticket.id) is closed")]
    }

    static let call: Command = Command(
        name: "CALL", access: .customers, parameters: [.optionalWord("ticket"), .optionalText("note")],
        summary: "Ask an agent to phone you at the number on your record, optionally about one of your tickets.",
        usage: "CALL [#<ticket>] [<note>]"
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        var ticket: TicketID?
        var noteStart = 0
        if let first = ctx.message.params.first, first.hasPrefix("#") {
            ticket = try parseTicket(first)
            noteStart = 1
        }
        let note = ctx.message.rest(from: noteStart)
        // `CALL ACCEPT 1` typed by a customer (an agent's command, tried by mistake or to probe)
        // must not become a call request that rings every agent.
        if let first = note?.split(whereSeparator: \.isWhitespace).first,
           case let word = String(String.UnicodeScalarView(first.unicodeScalars.filter { !InvisibleText.isFormatting($0) })).uppercased(),
           ["ACCEPT", "DONE"].contains(word) {
            throw .invalidArgument("CALL ACCEPT and CALL DONE are for agents; a call request's note cannot start with \(word). Usage: CALL [#<ticket>] [<note>]")
        }
        let call = try await ctx.services.tickets.requestCall(try ctx.requireScope(), ticket: ticket, note: note)
        let about = call.ticketId.map { " about \($0)" } ?? ""
        return [ServerLine(.ok, "CALL", [call.id.description, call.status.rawValue, call.ticketId?.description ?? ""],
                           text: "Call \(call.id) requested\(about): an agent will phone you at \(call.phone)")]
    }

    static let calls: Command = Command(
        name: "CALLS", access: .customers, parameters: [],
        summary: "List your call requests and their state (requested, accepted, done)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let list = try await ctx.services.tickets.calls(try ctx.requireScope())
        return list.map { c in
            ServerLine(.rpl, "CALLS", [c.id.description, c.status.rawValue, Timestamp.format(c.createdAt),
                                       c.ticketId?.description ?? "", c.phone], text: c.note ?? "")
        } + [ServerLine(.ok, "CALLS", [String(list.count)], text: "\(list.count) call requests")]
    }

    static let profile: Command = Command(
        name: "PROFILE", access: .customers, parameters: [.word("name|phone"), .text("value")],
        summary: "Change your name or phone number (PROFILE phone none removes it)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let rawField = ctx.arguments.required("name|phone").lowercased()
        guard let field = AccountService.ProfileField(rawValue: rawField) else {
            throw .invalidArgument("'\(rawField.prefix(20))' is not a profile field; use name or phone")
        }
        let customer = try await ctx.services.accounts.updateProfile(try ctx.requireScope(), field, to: ctx.arguments.required("value"))
        let value = field == .name ? customer.name : (customer.phone ?? "")
        return [ServerLine(.ok, "PROFILE", [field.rawValue], text: value)]
    }

    static let passwd: Command = Command(
        name: "PASSWD", access: .loggedIn, parameters: [.word("current"), .text("new")],
        summary: "Change your password. Write a space in the current password as \\s; the new one may contain spaces.",
        carriesPassword: true
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let current = TagValue.unescape(Substring(ctx.arguments.required("current")))
        let scope = try ctx.requireScope()
        // A wrong current password counts like a failed login (per address, and per account under
        // its own key), so a session cannot be used to guess the password faster than LOGIN can.
        let account = "passwd \(scope.tenantId.rawValue)/\(scope.userId.rawValue)"
        let limiter = ctx.services.loginLimiter
        if let wait = try await limiter.retryAfter(address: ctx.remoteAddress, account: account) {
            ctx.logger.notice("password change throttled", metadata: ["tenant": "\(scope.tenantId)", "user": "\(scope.userId)"])
            throw .throttled(retryAfterSeconds: max(1, Int(wait.components.seconds) + 1), failed: "password checks")
        }
        do throws(DesklineError) {
            try await ctx.services.accounts.changePassword(scope, current: current, new: ctx.arguments.required("new"))
            await limiter.succeeded(account: account)
        } catch {
            if error == .wrongPassword {
                await limiter.failed(address: ctx.remoteAddress, account: account)
                ctx.logger.notice("password change failed", metadata: ["tenant": "\(scope.tenantId)", "user": "\(scope.userId)", "reason": "\(error.code)"])
            }
            throw error
        }
        return [ServerLine(.ok, "PASSWD", text: "Password changed")]
    }

    // MARK: Helpers

    /// `#1001` (or `1001`).
    static func parseTicket(_ raw: String) throws(DesklineError) -> TicketID {
        guard let id = TicketID(parsing: raw) else {
            throw .invalidArgument("'\(raw.prefix(20))' is not a ticket number; write it like #1001")
        }
        return id
    }

    static func parseStatus(_ raw: String) throws(DesklineError) -> TicketStatus {
        guard let status = TicketStatus(rawValue: raw.lowercased()) else {
            throw .invalidArgument("'\(raw.prefix(20))' is not a status; use open, pending, resolved or closed")
        }
        return status
    }

    /// `RPL <COMMAND> #<ticket> [<key>] <msgid> <time> <kind> <role> <author> :<text>`.
    static func entryLine(_ command: String, _ ticket: TicketID, _ e: TicketEntry, key: String? = nil) -> ServerLine {
        ServerLine(.rpl, command, [ticket.description] + (key.map { [$0] } ?? [])
                   + [e.messageID, Timestamp.format(e.at), e.kind.rawValue, e.authorRole.rawValue, e.authorName],
                   text: e.text)
    }
}
