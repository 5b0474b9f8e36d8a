import struct Foundation.Date

// The rules that say what a change to a ticket or a call request *is* — numbers, sequence and
// note counters, timestamps — and how customer and user ids are made. Pure functions, so every
// store applies the same ones (issue #17: Core decides, stores persist) and Core's tests check
// them without a store.

extension TicketID {
    /// The first ticket of a tenant is #1001.
    public static let first = TicketID(1001)

    /// The number after `last`, the tenant's highest ticket so far (nil: none yet).
    public static func next(after last: TicketID?) -> TicketID {
        guard let last, last >= first else { return first }
        return TicketID(last.number + 1)
    }
}

extension CallID {
    /// The number after `last`, the tenant's highest call request so far (nil: none yet): 1, 2, 3, ...
    public static func next(after last: CallID?) -> CallID {
        CallID((last?.number ?? 0) + 1)
    }
}

extension Ticket {
    /// A ticket as a customer opens it: open, no entries yet, created and updated at `time`.
    public static func opened(_ id: TicketID, in tenant: TenantID, by customer: CustomerID, subject: String,
                              at time: Date) -> Ticket {
        Ticket(id: id, tenantId: tenant, customerId: customer, subject: subject, status: .open,
               createdAt: time, updatedAt: time)
    }

    /// Adds an entry to the ticket and returns it, numbered. A customer-visible entry takes the
    /// next `seq` and moves `updatedAt`; a note keeps the `seq` of the entry it follows and takes
    /// the next note number, and changes neither `seq` nor `updatedAt`, which customers see (so a
    /// customer cannot tell from a gap or a time that a note was written).
    public mutating func append(_ draft: TicketEntryDraft, at time: Date) -> TicketEntry {
        var note: Int?
        if draft.kind == .note {
            noteCount = (noteCount ?? 0) + 1
            note = noteCount
        } else {
            lastSeq += 1
            updatedAt = time
        }
        return TicketEntry(seq: lastSeq, note: note, kind: draft.kind, authorId: draft.authorId,
                           authorName: draft.authorName, authorRole: draft.authorRole, text: draft.text, at: time)
    }
}

extension CallRequest {
    /// A call request as a customer files it: requested, created and updated at `time`.
    public static func filed(_ id: CallID, in tenant: TenantID, by customer: CustomerID, about ticket: TicketID?,
                             phone: String, note: String?, at time: Date) -> CallRequest {
        CallRequest(id: id, tenantId: tenant, customerId: customer, ticketId: ticket, phone: phone,
                    note: note, status: .requested, createdAt: time, updatedAt: time)
    }
}

extension CustomerID {
    /// The id of a tenant's `n`th customer: `c1`, `c2`, ... (short enough to type).
    public static func numbered(_ n: Int) -> CustomerID { CustomerID(unchecked: "c\(n)") }
    /// `n` of `c<n>` (nil for an id the store did not number).
    public var number: Int? { rawValue.first == "c" ? Int(rawValue.dropFirst()) : nil }
}

extension UserID {
    /// The id of a tenant's `n`th login: `u1`, `u2`, ...
    public static func numbered(_ n: Int) -> UserID { UserID(unchecked: "u\(n)") }
    /// `n` of `u<n>` (nil for an id the store did not number).
    public var number: Int? { rawValue.first == "u" ? Int(rawValue.dropFirst()) : nil }
}
