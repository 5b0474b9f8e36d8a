import DesklineCore
import DesklineProtocol

// The helpdesk side: QUEUE, JOIN, PART, NOTE, ASSIGN, STATUS; and everyone's NOTIFICATIONS, READ.

extension Command {
    static let queue: Command = Command(
        name: "QUEUE", access: .staff, parameters: [.optionalWord("filter")],
        summary: "The helpdesk's tickets, newest activity first: unassigned, mine, open, pending, resolved, closed or all (default: all but closed)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        var filter: TicketService.QueueFilter?
        if let raw = ctx.arguments["filter"] {
            guard let f = TicketService.QueueFilter(rawValue: raw.lowercased()) else {
                throw .invalidArgument("'\(raw.prefix(20))' is not a queue filter; use \(TicketService.QueueFilter.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter = f
        }
        let list = try await ctx.services.tickets.queue(try ctx.requireScope(), filter)
        return list.map { t in
            ServerLine(.rpl, "QUEUE", [t.id.description, t.status.rawValue, Timestamp.format(t.updatedAt),
                                       t.customerId.rawValue, t.assigneeName ?? ""], text: t.subject)
        } + [ServerLine(.ok, "QUEUE", [String(list.count)], text: "\(list.count) tickets")]
    }

    static let join: Command = Command(
        name: "JOIN", access: .staff, parameters: [.word("ticket")],
        summary: "Follow a ticket live: every new message, note and status change is pushed to you (tickets assigned to you are followed anyway)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let (ticket, _) = try await ctx.services.tickets.show(try ctx.requireScope(), id)
        let added = ctx.services.hub.setJoined(ctx.sessionId, ticket.id, true)
        return [ServerLine(.ok, "JOIN", [ticket.id.description, ticket.status.rawValue],
                           text: added ? "Following \(ticket.id): \(ticket.subject)" : "Already following \(ticket.id)")]
    }

    static let part: Command = Command(
        name: "PART", access: .staff, parameters: [.word("ticket")],
        summary: "Stop following a ticket."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        guard ctx.services.hub.setJoined(ctx.sessionId, id, false) else {
            throw .notFound("You are not following \(id).")
        }
        return [ServerLine(.ok, "PART", [id.description], text: "No longer following \(id)")]
    }

    static let note: Command = Command(
        name: "NOTE", access: .staff, parameters: [.word("ticket"), .text("text")],
        summary: "Add an internal note to a ticket: staff see it, the customer never does.",
        pipelines: true
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let (ticket, entry) = try await ctx.services.tickets.note(try ctx.requireScope(), id, text: ctx.arguments.required("text"),
                                                              whenQueued: ctx.whenQueued)
        return [ServerLine(.ok, "NOTE", [ticket.id.description, entry.messageID], text: "Note \(entry.messageID) added to \(ticket.id)")]
    }

    static let assign: Command = Command(
        name: "ASSIGN", access: .staff, parameters: [.word("ticket"), .word("agent-email|me|none")],
        summary: "Assign a ticket to an agent or admin (by email), to yourself (me), or to nobody (none)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let scope = try ctx.requireScope()
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let who = ctx.arguments.required("agent-email|me|none")
        let assignee: UserID?
        switch who.lowercased() {
        case "me": assignee = scope.userId
        case "none": assignee = nil
        default: assignee = try await ctx.services.tickets.staffUser(scope, email: who).id
        }
        let (ticket, entry) = try await ctx.services.tickets.assign(scope, id, to: assignee)
        return [ServerLine(.ok, "ASSIGN", [ticket.id.description, String(entry.seq), ticket.assigneeName ?? ""],
                           text: "Ticket \(ticket.id) \(entry.text)")]
    }

    static let status: Command = Command(
        name: "STATUS", access: .staff, parameters: [.word("ticket"), .word("status")],
        summary: "Set a ticket's status: open, pending, resolved or closed."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let id = try parseTicket(ctx.arguments.required("ticket"))
        let status = try parseStatus(ctx.arguments.required("status"))
        let (ticket, entry) = try await ctx.services.tickets.setStatus(try ctx.requireScope(), id, status)
        return [ServerLine(.ok, "STATUS", [ticket.id.description, String(entry.seq), ticket.status.rawValue],
                           text: "Ticket \(ticket.id) is \(ticket.status.rawValue)")]
    }

    static let callQueue: Command = Command(
        name: "CALLS", access: .staff, parameters: [.optionalWord("open|mine|all")],
        summary: "The helpdesk's call requests, oldest first: open (default: not done yet), mine (accepted by you) or all."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let raw = ctx.arguments["open|mine|all"]?.lowercased() ?? "open"
        guard let filter = TicketService.CallFilter(rawValue: raw) else {
            throw .invalidArgument("'\(raw.prefix(20))' is not a call filter; use open, mine or all")
        }
        let list = try await ctx.services.tickets.callQueue(try ctx.requireScope(), filter)
        return list.map { c in
            ServerLine(.rpl, "CALLS", [c.id.description, c.status.rawValue, Timestamp.format(c.createdAt), c.ticketId?.description ?? "",
                                       c.phone, c.customerId.rawValue, c.agentName ?? ""], text: c.outcome ?? c.note ?? "")
        } + [ServerLine(.ok, "CALLS", [String(list.count)], text: "\(list.count) call requests")]
    }

    static let callHandling: Command = Command(
        name: "CALL", access: .staff, parameters: [.word("ACCEPT|DONE"), .word("call"), .optionalText("outcome")],
        summary: "Take a call request (ACCEPT: the customer is told you will phone) or mark it done, with an outcome the customer sees.",
        usage: "CALL ACCEPT|DONE <call> [<outcome>]"
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let scope = try ctx.requireScope()
        let action = ctx.arguments.required("ACCEPT|DONE").uppercased()
        guard let n = Int(ctx.arguments.required("call")), n > 0 else {
            throw .invalidArgument("'\(ctx.arguments.required("call").prefix(20))' is not a call number")
        }
        let call: CallRequest
        switch action {
        case "ACCEPT":
            guard ctx.arguments["outcome"] == nil else { throw .invalidArgument("Usage: CALL ACCEPT <call>") }
            call = try await ctx.services.tickets.acceptCall(scope, CallID(n))
        case "DONE":
            call = try await ctx.services.tickets.finishCall(scope, CallID(n), outcome: ctx.arguments["outcome"])
        default:
            throw .invalidArgument("'\(action.prefix(20))' is not ACCEPT or DONE. Usage: CALL ACCEPT|DONE <call> [<outcome>]")
        }
        return [ServerLine(.ok, "CALL", [call.id.description, call.status.rawValue, call.phone],
                           text: call.status == .accepted ? "Call \(call.id) is yours: phone \(call.phone)" : "Call \(call.id) done")]
    }

    static let agents: Command = Command(
        name: "AGENTS", access: .staff, parameters: [],
        summary: "Who of the helpdesk is online, away or offline."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let scope = try ctx.requireScope()
        let staff = try await ctx.services.accounts.staff(scope)
        // (Sessions on every node of a shared store.)
        let present = try await ctx.services.hub.presence(in: scope.tenantId)
        let lines = staff.map { user -> ServerLine in
            let sessions = present[user.id]?.sessions ?? 0
            let away = present[user.id]?.away
            let state = sessions == 0 ? "offline" : (away != nil ? "away" : "online")
            return ServerLine(.rpl, "AGENTS", [user.email, user.role.rawValue, state, String(sessions), user.displayName],
                              text: sessions > 0 ? away ?? "" : "")
        }
        let online = staff.filter { (present[$0.id]?.sessions ?? 0) > 0 }.count
        return lines + [ServerLine(.ok, "AGENTS", [String(lines.count)], text: "\(online) of \(lines.count) online")]
    }

    static let away: Command = Command(
        name: "AWAY", access: .staff, parameters: [.optionalText("reason")],
        summary: "Mark yourself away (AGENTS shows it), with an optional reason."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let reason = try ctx.arguments["reason"].map { (r) throws(DesklineError) in try InputRules.messageText(r, field: "reason") } ?? "away"
        try await ctx.services.hub.setAway(try ctx.requireScope(), reason)
        return [ServerLine(.ok, "AWAY", text: reason)]
    }

    static let back: Command = Command(
        name: "BACK", access: .staff, parameters: [],
        summary: "You are available again."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        try await ctx.services.hub.setAway(try ctx.requireScope(), nil)
        return [ServerLine(.ok, "BACK", text: "You are back")]
    }

    static let customer: Command = Command(
        name: "CUSTOMER", access: .admins, parameters: [.word("NEW|LOGIN|PASSWORD"), .word("email|customer"), .optionalWord("phone"), .optionalText("name")],
        summary: "Admins: create a customer record (NEW), give it a login with a generated password (LOGIN), or reset that password (PASSWORD).",
        usage: "CUSTOMER NEW <email> <phone|none> <name> | CUSTOMER LOGIN <customer> | CUSTOMER PASSWORD <customer>",
        // LOGIN and PASSWORD reply with a generated password.
        carriesPassword: true
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let scope = try ctx.requireScope()
        let action = ctx.arguments.required("NEW|LOGIN|PASSWORD").uppercased()
        let target = ctx.arguments.required("email|customer")
        switch action {
        case "NEW":
            guard let phone = ctx.arguments["phone"], let name = ctx.arguments["name"] else {
                throw .invalidArgument("Usage: CUSTOMER NEW <email> <phone|none> <name>")
            }
            let customer = try await ctx.services.accounts.adminCreateCustomer(
                scope, name: name, email: target, phone: phone.lowercased() == "none" ? nil : TagValue.unescape(Substring(phone)))
            return [ServerLine(.ok, "CUSTOMER", ["NEW", customer.id.rawValue, customer.email],
                               text: "Customer \(customer.id) created: \(customer.name)")]
        case "LOGIN", "PASSWORD":
            guard ctx.arguments["phone"] == nil else { throw .invalidArgument("Usage: CUSTOMER \(action) <customer>") }
            let id = try CustomerID(validating: target)
            if action == "LOGIN" {
                let (user, password) = try await ctx.services.accounts.adminCreateCustomerLogin(scope, customer: id)
                return [ServerLine(.ok, "CUSTOMER", ["LOGIN", id.rawValue, user.id.rawValue, user.email],
                                   text: "Login created; the customer logs in with LOGIN \(scope.tenantId)/\(user.email) and the initial password: \(password)")]
            }
            let (customer, password) = try await ctx.services.accounts.adminResetCustomerPassword(scope, customer: id)
            return [ServerLine(.ok, "CUSTOMER", ["PASSWORD", id.rawValue, customer.email],
                               text: "New password; the customer logs in with LOGIN \(scope.tenantId)/\(customer.email) and: \(password)")]
        default:
            throw .invalidArgument("'\(action.prefix(20))' is not NEW, LOGIN or PASSWORD")
        }
    }

    static let notifications: Command = Command(
        name: "NOTIFICATIONS", access: .loggedIn, parameters: [.optionalWord("all")],
        summary: "List your unread notifications (with all: read ones too), oldest first."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        var all = false
        if let raw = ctx.arguments["all"] {
            guard raw.lowercased() == "all" else { throw .invalidArgument("Usage: NOTIFICATIONS [all]") }
            all = true
        }
        let list = try await ctx.services.notifications.list(try ctx.requireScope(), all: all)
        return list.map { n, read in
            ServerLine(.rpl, "NOTIFICATIONS", [String(n.id), Timestamp.format(n.at), read ? "read" : "unread", n.type,
                                               n.ticket?.description ?? "", n.actorName], text: n.text)
        } + [ServerLine(.ok, "NOTIFICATIONS", [String(list.count)], text: "\(list.count) notifications")]
    }

    static let read: Command = Command(
        name: "READ", access: .loggedIn, parameters: [.word("id|all")],
        summary: "Mark a notification (or all of them) read."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let raw = ctx.arguments.required("id|all")
        var id: Int?
        if raw.lowercased() != "all" {
            guard let n = Int(raw), n > 0 else { throw .invalidArgument("'\(raw.prefix(20))' is not a notification id; use a number or all") }
            id = n
        }
        try await ctx.services.notifications.markRead(try ctx.requireScope(), id: id)
        return [ServerLine(.ok, "READ", [id.map(String.init) ?? "all"], text: id.map { "Notification \($0) read" } ?? "All notifications read")]
    }
}
