import struct Foundation.Date

/// A ticket number, unique within its tenant; written `#1001` on the wire.
public struct TicketID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let number: Int

    public init(_ number: Int) { self.number = number }

    /// Parses `#1001` or `1001`. Nil for anything else.
    public init?(parsing text: String) {
        // Bytes, not characters: only ASCII digits count, and this runs for every ticket command.
        var digits = text.utf8[...]
        if digits.first == UInt8(ascii: "#") { digits = digits.dropFirst() }
        guard (1...9).contains(digits.count), digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        let n = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        guard n > 0 else { return nil }
        number = n
    }

    public var description: String { "#\(number)" }
    public static func < (a: TicketID, b: TicketID) -> Bool { a.number < b.number }

    public init(from decoder: any Decoder) throws {
        number = try decoder.singleValueContainer().decode(Int.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(number)
    }
}

/// Where a ticket is in its life.
public enum TicketStatus: String, Sendable, Codable, CaseIterable {
    /// Waiting for the helpdesk.
    case open
    /// Waiting for the customer.
    case pending
    /// Answered; the customer writing again reopens it.
    case resolved
    /// Finished for good: nobody writes in it any more.
    case closed
}

/// A ticket's current state. Its conversation is the append-only list of ``TicketEntry``.
public struct Ticket: Sendable, Codable, Equatable {
    public var id: TicketID
    public var tenantId: TenantID
    public var customerId: CustomerID
    public var subject: String
    public var status: TicketStatus
    public var assigneeId: UserID?
    public var assigneeName: String?
    public var createdAt: Date
    public var updatedAt: Date
    /// Sequence number of the newest customer-visible entry (0: none yet).
    public var lastSeq: Int
    /// Number of internal notes. Notes have their own numbering so that customers see an
    /// unbroken 1, 2, 3, ... and cannot tell from a gap that a note was written.
    public var noteCount: Int?
    /// Helpdesk messages the customer has not seen yet (reset when the customer reads the ticket).
    public var customerUnread: Int

    public init(id: TicketID, tenantId: TenantID, customerId: CustomerID, subject: String, status: TicketStatus,
                assigneeId: UserID? = nil, assigneeName: String? = nil, createdAt: Date, updatedAt: Date,
                lastSeq: Int = 0, customerUnread: Int = 0) {
        self.id = id
        self.tenantId = tenantId
        self.customerId = customerId
        self.subject = subject
        self.status = status
        self.assigneeId = assigneeId
        self.assigneeName = assigneeName
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.lastSeq = lastSeq
        self.customerUnread = customerUnread
    }
}

/// One line of a ticket's conversation, in the ticket's append-only log.
public struct TicketEntry: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// Written by the customer or a reply the customer sees.
        case message
        /// Internal note: staff only, never shown to customers.
        case note
        /// A status change; `text` says what changed.
        case status
    }

    /// 1, 2, 3, ... within the ticket for customer-visible entries: the message id used by
    /// HISTORY paging. A note carries the `seq` of the entry it follows and its own ``note``
    /// number, and is shown as `<seq>.<note>` (`3.1`).
    public var seq: Int
    /// Set for notes only: 1, 2, 3, ... per ticket.
    public var note: Int?
    public var kind: Kind
    public var authorId: UserID
    public var authorName: String
    public var authorRole: Role
    public var text: String
    public var at: Date

    public init(seq: Int, note: Int? = nil, kind: Kind, authorId: UserID, authorName: String, authorRole: Role, text: String, at: Date) {
        self.seq = seq
        self.note = note
        self.kind = kind
        self.authorId = authorId
        self.authorName = authorName
        self.authorRole = authorRole
        self.text = text
        self.at = at
    }

    /// Whether a customer may ever see this entry.
    public var isVisibleToCustomer: Bool { kind != .note }

    /// The message id on the wire: `5`, or `5.2` for the second note after entry 5.
    public var messageID: String { note.map { "\(seq).\($0)" } ?? String(seq) }

    /// Where the entry stands in the conversation: a note right after the entry it follows.
    public var position: EntryPosition { EntryPosition(seq, note: note ?? 0) }
}

/// A place in a ticket's conversation, for HISTORY paging: entry `5` or note `5.2`.
public struct EntryPosition: Sendable, Equatable, Comparable, CustomStringConvertible {
    public var seq: Int
    public var note: Int

    public init(_ seq: Int, note: Int = 0) {
        self.seq = seq
        self.note = note
    }

    /// Parses `5` or `5.2` (non-negative whole numbers).
    public init?(parsing text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.count <= 9 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
              let seq = Int(parts[0]), let note = parts.count == 2 ? Int(parts[1]) : 0
        else { return nil }
        self.init(seq, note: note)
    }

    public var description: String { note == 0 ? String(seq) : "\(seq).\(note)" }
    public static func < (a: EntryPosition, b: EntryPosition) -> Bool { (a.seq, a.note) < (b.seq, b.note) }
}

/// A call request number, unique within its tenant.
public struct CallID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let number: Int
    public init(_ number: Int) { self.number = number }
    public var description: String { String(number) }

    public init(from decoder: any Decoder) throws {
        number = try decoder.singleValueContainer().decode(Int.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(number)
    }
}

/// A customer's request to be phoned by an agent.
public struct CallRequest: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        case requested
        case accepted
        case done
    }

    public var id: CallID
    public var tenantId: TenantID
    public var customerId: CustomerID
    public var ticketId: TicketID?
    /// The customer's phone on record when the call was requested.
    public var phone: String
    public var note: String?
    public var status: Status
    public var createdAt: Date
    public var updatedAt: Date
    /// The agent who accepted the call.
    public var agentId: UserID?
    public var agentName: String?
    /// What the agent noted when the call was done.
    public var outcome: String?

    public init(id: CallID, tenantId: TenantID, customerId: CustomerID, ticketId: TicketID?, phone: String,
                note: String?, status: Status, createdAt: Date, updatedAt: Date) {
        self.id = id
        self.tenantId = tenantId
        self.customerId = customerId
        self.ticketId = ticketId
        self.phone = phone
        self.note = note
        self.status = status
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}
