import struct Foundation.Date

/// Who did something.
public struct Actor: Sendable, Codable, Equatable {
    public var id: UserID
    public var name: String
    public var role: Role

    public init(id: UserID, name: String, role: Role) {
        self.id = id
        self.name = name
        self.role = role
    }
}

/// Something that happened to a ticket or a call request: pushed live to the sessions allowed to
/// see it, and kept in the inbox of the people the notification rules name. A fact, with no wire
/// text in it: `Codable`, so that a store can keep it in an event log (issue #17).
public struct TicketEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// A customer opened a ticket.
        case created
        /// A new conversation entry (message, note, status change, assignment).
        case entry
        /// A customer asked for a phone call.
        case call
    }

    public var kind: Kind
    public var tenantId: TenantID
    /// The ticket after the change (for calls: the ticket the call is about, if any).
    public var ticket: Ticket?
    public var entry: TicketEntry?
    public var call: CallRequest?
    public var actor: Actor
    public var at: Date
    /// Users to notify durably (their inbox), by the rules of ``NotificationPolicy``.
    public var recipients: [UserID] = []
    /// The login of the ticket's (or call's) customer, who sees the customer-visible events.
    public var customerUserId: UserID?
    /// The connection that caused the event (it got an `OK` instead).
    public var originSession: SessionID?
    /// The event's number in its tenant's event log: 1, 2, 3, ... without gaps, in the order the
    /// changes were committed. Set by the store when it commits the event (nil before).
    public var seq: Int?

    public init(kind: Kind, tenantId: TenantID, ticket: Ticket? = nil, entry: TicketEntry? = nil, call: CallRequest? = nil,
                actor: Actor, at: Date, recipients: [UserID] = [], customerUserId: UserID? = nil,
                originSession: SessionID? = nil, seq: Int? = nil) {
        self.kind = kind
        self.tenantId = tenantId
        self.ticket = ticket
        self.entry = entry
        self.call = call
        self.actor = actor
        self.at = at
        self.recipients = recipients
        self.customerUserId = customerUserId
        self.originSession = originSession
        self.seq = seq
    }

    /// Whether a customer may ever see this event (internal notes: never).
    public var isVisibleToCustomers: Bool { entry?.isVisibleToCustomer ?? true }

    /// Whether a session with `scope` may receive this event at all.
    public func mayReach(_ scope: SessionScope) -> Bool {
        guard scope.tenantId == tenantId else { return false }
        if scope.role.isStaff { return true }
        guard isVisibleToCustomers else { return false }
        if let ticket { return TicketService.canSee(ticket, scope) }
        return call?.customerId == scope.customerId
    }
}

/// The seed's notification rules: who is told about what.
public enum NotificationPolicy {
    /// - Customer writes in a ticket → the assigned agent; unassigned → every agent of the tenant.
    /// - Customer requests a call → the assigned agent of the tied ticket, else every agent; an
    ///   agent accepting it or marking it done → the customer.
    /// - Customer opens a ticket → every admin of the tenant.
    /// - Helpdesk reply, status change or assignment → the ticket's customer (never for notes);
    ///   an assignment also tells the new assignee.
    /// - An internal note → the assigned agent.
    /// Nobody is notified of their own action.
    public static func recipients(of event: TicketEvent, agents: [UserID], admins: [UserID]) -> [UserID] {
        var users: [UserID] = []
        let assignee = event.ticket?.assigneeId
        switch event.kind {
        case .created:
            users = admins
        case .call where event.actor.role == .customer:
            users = assignee.map { [$0] } ?? agents
        case .call: // an agent accepted or finished it: tell the customer
            users = event.customerUserId.map { [$0] } ?? []
        case .entry:
            guard let entry = event.entry else { break }
            switch (entry.kind, event.actor.role) {
            case (.note, _):
                users = assignee.map { [$0] } ?? []
            case (_, .customer):
                users = assignee.map { [$0] } ?? agents
            case (.message, _), (.status, _):
                users = event.customerUserId.map { [$0] } ?? []
                if entry.kind == .status, let assignee { users.append(assignee) }
            }
        }
        var seen = Set<UserID>()
        return users.filter { $0 != event.actor.id && seen.insert($0).inserted }
    }
}

/// A connection, named so that no two connections of any gateway process sharing a store have
/// the same: the process's node id (random, chosen when it starts) and the connection's number
/// in that process. Written `node/number`.
public struct SessionID: Sendable, Hashable, Codable, CustomStringConvertible {
    public var node: String
    public var number: Int

    public init(node: String, number: Int) {
        self.node = node
        self.number = number
    }

    /// A fresh node id: 16 hex digits from the system's random generator.
    public static func newNode() -> String {
        var generator = SystemRandomNumberGenerator()
        let bits = generator.next() as UInt64
        let hex = String(bits, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    public var description: String { "\(node)/\(number)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let slash = text.lastIndex(of: "/"), let number = Int(text[text.index(after: slash)...]) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a session id: \(text)"))
        }
        self.init(node: String(text[..<slash]), number: number)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// One entry of a user's inbox.
public struct Notification: Sendable, Codable, Equatable {
    /// 1, 2, 3, ... per user.
    public var id: Int
    public var type: String
    public var ticket: TicketID?
    public var call: CallID?
    public var actorName: String
    public var text: String
    public var at: Date

    public init(id: Int, type: String, ticket: TicketID?, call: CallID?, actorName: String, text: String, at: Date) {
        self.id = id
        self.type = type
        self.ticket = ticket
        self.call = call
        self.actorName = actorName
        self.text = text
        self.at = at
    }
}
