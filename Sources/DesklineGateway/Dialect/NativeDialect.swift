import DesklineCore
import DesklineProtocol

/// The wording of the native dialect (docs/PROTOCOL.md): what Core leaves to a dialect, with the
/// native commands named where they help.
enum NativeDialect {
    /// The text after `ERR <COMMAND> <CODE> :`, for a session of `role` (nil: not known). A
    /// customer is pointed to her own tickets (`TICKETS`), staff to the helpdesk's (`QUEUE`).
    /// Every customer gets the same text whatever the reason (another customer's ticket, another
    /// tenant's, none at all), and so does all staff.
    static func text(of error: DesklineError, role: Role? = nil) -> String {
        switch error.reason {
        case .noSuchTicket(let id)? where role?.isStaff == true: "No ticket \(id) in this helpdesk. QUEUE lists its tickets."
        case .noSuchTicket(let id)?: "No ticket \(id) that you can see. TICKETS lists yours."
        case .ticketClosed(let id)?: "Ticket \(id) is closed. Open a new one with NEW <subject>."
        case .noPhone?: "There is no phone number on your record. Add one with PROFILE phone <number>, then CALL again."
        case .customerHasNoLogin(let id)?: "Customer \(id) has no login yet: CUSTOMER LOGIN \(id)."
        case .callNotAccepted(let id)?: "Accept call \(id) first: CALL ACCEPT \(id)."
        case nil: error.message
        }
    }

    /// The pushed line of an event (docs/PROTOCOL.md, "Events"); the hub renders each event once.
    static func line(for event: TicketEvent) -> ServerLine? {
        switch event.kind {
        case .entry:
            guard let ticket = event.ticket, let entry = event.entry else { break }
            return ServerLine(.event, "TICKET", [ticket.id.description, entry.messageID, Timestamp.format(entry.at),
                                                 entry.kind.rawValue, entry.authorRole.rawValue, entry.authorName],
                              text: entry.text)
        case .created:
            guard let ticket = event.ticket else { break }
            return ServerLine(.event, "NEW", [ticket.id.description, Timestamp.format(ticket.createdAt),
                                              ticket.customerId.rawValue, event.actor.name], text: ticket.subject)
        case .call:
            guard let call = event.call else { break }
            let text = call.status == .requested ? call.note : (call.status == .done ? call.outcome : nil)
            return ServerLine(.event, "CALL", [call.id.description, call.status.rawValue, Timestamp.format(call.updatedAt),
                                               call.ticketId?.description ?? "", event.actor.name, call.phone],
                              text: text ?? "")
        }
        return nil // an event without the record it is about: nothing to show
    }
}
