import DesklineCore
import Foundation

// The tenant's event log, the store's transactional outbox:
//
//   tenants/<t>/events/1.jsonl    one committed TicketEvent per line, numbered 1, 2, 3, ... (its
//                                 `seq`) in commit order, without gaps
//
// A change's event is appended in the same write batch as the change's other lines, so it is
// durable together with them or not at all. Once the batch is durable, the writer hands the
// batch's events to ``committedEvents()`` in that order. (The `1` names the segment's first
// event: a later version can start new segments and drop old ones without renaming this one.)

/// A line of the event log read only for its number.
struct EventSeqLine: Decodable {
    var seq: Int
}

extension FileStore {
    func eventsDir(_ t: TenantID) -> String { tenantDir(t) + "/events" }
    func eventLog(_ t: TenantID) -> String { eventsDir(t) + "/1.jsonl" }

    /// Numbers `event` as the tenant's next and appends it to the event log in `batch`; the
    /// writer publishes it once the batch is durable. Returns the numbered event.
    func appendEvent(_ event: TicketEvent, in tenant: TenantID, _ batch: WriteBatch, _ memory: inout TenantMemory) throws -> TicketEvent {
        let last: Int
        if let known = memory.lastEvent {
            last = known
        } else {
            try DurableFile.makeDirectories(eventsDir(tenant))
            last = try lastLine(EventSeqLine.self, eventLog(tenant), uncommitted: true)?.seq ?? 0
        }
        var numbered = event
        numbered.seq = last + 1
        try batch.append(JSONLine.line(numbered), to: eventLog(tenant))
        memory.lastEvent = last + 1
        batch.events.append(numbered)
        return numbered
    }

    public func events(in tenant: TenantID, after seq: Int, limit: Int) async throws(DesklineError) -> [TicketEvent] {
        try await io {
            let path = self.eventLog(tenant)
            let visibility = self.visibility
            guard limit > 0, let log = try LogReader(path, visibleLength: { try visibility.visibleLength(path, measure: $0) }) else { return [] }
            // Numbers grow along the log: find the first line past `seq`, read on from there.
            let start = try log.firstLine { try self.decodeLine(EventSeqLine.self, $0, path).seq > seq }
            var events: [TicketEvent] = []
            try log.forEachLine(from: start) { line, _, _ in
                events.append(try self.decodeLine(TicketEvent.self, line, path))
                return events.count < limit
            }
            return events
        }
    }

    public func lastEventSeq(in tenant: TenantID) async throws(DesklineError) -> Int {
        try await io { try self.lastLine(EventSeqLine.self, self.eventLog(tenant))?.seq ?? 0 }
    }

    public func committedEvents() -> AsyncStream<[TicketEvent]> {
        eventFeed.subscribe()
    }

    /// Writes what a decided ``Change`` adds besides the ticket's or call's own log line: the
    /// inbox lines and the event. Returns the change as committed (its event numbered).
    func commitEffects(of change: Change, in tenant: TenantID, _ inboxLines: [InboxLine], _ batch: WriteBatch,
                       _ memory: inout TenantMemory) throws -> Change {
        var committed = change
        try append(inboxLines, batch, &memory)
        if let event = change.event {
            committed.event = try appendEvent(event, in: tenant, batch, &memory)
        }
        return committed
    }

    /// The inbox lines of a change, worked out before anything of it is written (so that trouble
    /// here refuses the change alone).
    func inboxLines(of change: Change, in tenant: TenantID, _ memory: TenantMemory) throws -> [InboxLine] {
        guard let inbox = change.inbox else { return [] }
        return try inboxLines(inbox.notification, for: inbox.users, in: tenant, memory)
    }
}
