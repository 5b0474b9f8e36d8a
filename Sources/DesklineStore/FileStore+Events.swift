import DesklineCore
import Foundation

// The tenant's event log, the store's transactional outbox:
//
//   tenants/<t>/events/<first>.jsonl   one committed TicketEvent per line, numbered 1, 2, 3, ...
//                                      (its `seq`) in commit order, without gaps; cut into
//                                      segments of 10,000 events, each named by its first number
//                                      (1.jsonl, 10001.jsonl, ...)
//
// A change's event is appended in the same write batch as the change's other lines, so it is
// durable together with them or not at all. Once the batch is durable, the writer hands the
// batch's events to the store's followers (``followCommittedEvents(_:)``) in that order. The
// log is read only to catch up on events a follower missed, so it keeps a tenant's last events
// (``EventLogRetention``): when a segment begins, the writer removes the segments before the
// last ten.

/// A line of the event log read only for its number.
struct EventSeqLine: Decodable {
    var seq: Int
}

/// An event-log line's number and where its ticket and entry are: the ticket log's line of
/// entry `seq`.`note` of ticket `ticket` (no `seq`: the ticket's first line, for a new ticket).
/// Most events are about an entry just written to its ticket's log, so they are stored once.
struct StoredEventRef: Decodable {
    struct Ref: Decodable {
        var ticket: Int
        var seq: Int?
        var note: Int?
    }

    var seq: Int
    var stored: Ref?
}

/// How the event log is cut into segment files, and how many of them are kept.
public struct EventLogRetention: Sendable, Equatable {
    /// Events per segment file.
    public var eventsPerSegment: Int
    /// Segments kept: the current one and those before it; older ones are removed when a new
    /// segment begins.
    public var segmentsKept: Int

    /// At least two segments are kept: the one a batch begins is not committed yet when the old
    /// ones go, so the one before it must stay (it holds the last committed number).
    public init(eventsPerSegment: Int, segmentsKept: Int) {
        self.eventsPerSegment = max(1, eventsPerSegment)
        self.segmentsKept = max(2, segmentsKept)
    }

    /// 10,000 events a segment, ten segments: a tenant's last 90,001-100,000 events.
    public static let standard = EventLogRetention(eventsPerSegment: 10_000, segmentsKept: 10)

    /// The first number of the segment that holds event `seq`.
    func segment(of seq: Int) -> Int { ((seq - 1) / eventsPerSegment) * eventsPerSegment + 1 }

    /// Segments (by first number) that go once the segment starting at `current` begins.
    func expired(_ segments: [Int], current: Int) -> [Int] {
        segments.filter { $0 <= current - segmentsKept * eventsPerSegment }
    }
}

extension FileStore {
    func eventsDir(_ t: TenantID) -> String { tenantDir(t) + "/events" }
    /// The segment file that holds event `seq`.
    func eventLog(_ t: TenantID, holding seq: Int) -> String { eventsDir(t) + "/\(eventLogRetention.segment(of: seq)).jsonl" }
    /// The segments on disk, by first number, ascending.
    func eventSegments(_ t: TenantID) throws -> [Int] { try logNumbers(in: eventsDir(t)) }

    /// The number of the tenant's last event on disk (0: none), as the writer sees its logs
    /// (`uncommitted`) or as readers do: the last line of the newest segment that has one.
    func lastEventOnDisk(_ tenant: TenantID, uncommitted: Bool) throws -> Int {
        for segment in try eventSegments(tenant).reversed() {
            if let last = try lastLine(EventSeqLine.self, eventsDir(tenant) + "/\(segment).jsonl", uncommitted: uncommitted) {
                return last.seq
            }
        }
        return 0
    }

    /// Numbers `event` as the tenant's next and adds it to `batch`: its line is written with the
    /// batch's others at the end of the batch (``writeEventLines(_:_:)``), and the writer
    /// publishes it once the batch is durable. Returns the numbered event.
    /// `storedWithTicketLine`: the event's ticket and entry are the line this change wrote to its
    /// ticket's log (the event-log line then names that line instead of repeating it).
    func appendEvent(_ event: TicketEvent, in tenant: TenantID, storedWithTicketLine: Bool, _ batch: WriteBatch,
                     _ memory: inout TenantMemory) throws -> TicketEvent {
        let last: Int
        if let known = memory.lastEvent {
            last = known
        } else {
            try DurableFile.makeDirectories(eventsDir(tenant))
            last = try lastEventOnDisk(tenant, uncommitted: true)
        }
        var numbered = event
        numbered.seq = last + 1
        memory.lastEvent = last + 1
        batch.events.append(numbered)
        if storedWithTicketLine { batch.eventsStoredWithTicketLine.insert(last + 1) }
        return numbered
    }

    /// Before a batch's commit: appends its events' lines to the event log, one write per
    /// segment file (a burst of messages costs one more write per batch, not per message). A
    /// failure fails the whole batch, like any failed write of it.
    func writeEventLines(_ batch: WriteBatch, _ tenant: TenantID) {
        guard !batch.events.isEmpty else { return }
        do {
            var lines = Data()
            var path = eventLog(tenant, holding: batch.events[0].seq ?? 1)
            for event in batch.events {
                let segment = eventLog(tenant, holding: event.seq ?? 1)
                if segment != path {
                    try batch.append(lines, to: path)
                    (lines, path) = (Data(), segment)
                }
                lines.append(try JSONLine.line(event, stored: batch.eventsStoredWithTicketLine.contains(event.seq ?? 0)))
            }
            try batch.append(lines, to: path)
        } catch {
            batch.fail(error)
        }
    }

    /// Before a batch's commit (on the tenant's writer): if one of its events begins a segment,
    /// removes the segments that are no longer kept (old events: whether or not the batch then
    /// commits). A failure is logged and tried again at the next segment; a removal a crash
    /// undoes is repeated then too.
    func pruneEventLog(after events: [TicketEvent]) {
        let retention = eventLogRetention
        guard let event = events.first(where: { ($0.seq ?? 0) > 1 && retention.segment(of: $0.seq ?? 0) == $0.seq }),
              let seq = event.seq else { return }
        let tenant = event.tenantId
        do {
            let expired = retention.expired(try eventSegments(tenant), current: seq)
            guard !expired.isEmpty else { return }
            for segment in expired {
                let path = eventsDir(tenant) + "/\(segment).jsonl"
                guard unlink(path) == 0 || errno == ENOENT else { throw DurableFile.IOError(operation: "unlink", path: path, errno: errno) }
            }
            try DurableFile.syncDirectory(eventsDir(tenant))
            logger.debug("removed old event log segments", metadata: ["tenant": "\(tenant)", "segments": "\(expired)"])
        } catch {
            logger.error("could not remove old event log segments", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
        }
    }

    public func events(in tenant: TenantID, after seq: Int, limit: Int) async throws(DesklineError) -> [TicketEvent] {
        try await io {
            var events: [TicketEvent] = []
            let visibility = self.visibility
            // From the segment that holds `seq + 1` (or the oldest kept, if that one is gone) on.
            let segments = try self.eventSegments(tenant)
            let first = self.eventLogRetention.segment(of: seq + 1)
            for segment in segments where segment >= (segments.last { $0 <= first } ?? first) {
                guard events.count < limit else { break }
                let path = self.eventsDir(tenant) + "/\(segment).jsonl"
                guard let log = try LogReader(path, visibleLength: { try visibility.visibleLength(path, measure: $0) }) else { continue }
                // Numbers grow along the log: find the first line past `seq`, read on from there.
                let start = try log.firstLine { try self.decodeLine(EventSeqLine.self, $0, path).seq > seq }
                try log.forEachLine(from: start) { line, _, _ in
                    // (One whose ticket log line is gone is logged and left out: the follower
                    // skips it as a hole.)
                    if let event = try self.event(fromLine: line, path, tenant) { events.append(event) }
                    return events.count < limit
                }
            }
            return events
        }
    }

    /// An event from its event-log line, its ticket and entry read from the ticket log when the
    /// line names them there (nil, logged, if that line is not there).
    func event(fromLine line: Data, _ path: String, _ tenant: TenantID) throws -> TicketEvent? {
        var event = try decodeLine(TicketEvent.self, line, path)
        guard let ref = try decodeLine(StoredEventRef.self, line, path).stored else { return event }
        let ticketPath = ticketLog(TicketID(ref.ticket), tenant)
        let visibility = self.visibility
        var stored: TicketLogLine?
        if let log = try LogReader(ticketPath, visibleLength: { try visibility.visibleLength(ticketPath, measure: $0) }) {
            let position = ref.seq.map { EntryPosition($0, note: ref.note ?? 0) }
            let start = try position.map { position in try log.firstLine { try decodeLine(PlaceOfLine.self, $0, ticketPath).position >= position } } ?? 0
            try log.forEachLine(from: start) { line, _, _ in
                stored = try decodeLine(TicketLogLine.self, line, ticketPath)
                return false
            }
            if stored?.entry?.position != position { stored = nil }
        }
        guard let stored else {
            logger.error("an event names a ticket log line that is not there; it is left out", metadata: ["path": "\(path)", "seq": "\(event.seq ?? 0)"])
            return nil
        }
        event.ticket = stored.ticket
        event.entry = stored.entry
        return event
    }

    public func lastEventSeq(in tenant: TenantID) async throws(DesklineError) -> Int {
        try await io { try self.lastEventOnDisk(tenant, uncommitted: false) }
    }

    public func followCommittedEvents(_ sink: @escaping CommittedEventSink) -> EventSubscription {
        eventFeed.follow(sink)
    }

    /// Writes what a decided ``Change`` adds besides the ticket's or call's own log line: the
    /// inbox lines and the event. `ticketLine`: the line the change wrote to its ticket's log
    /// (`first`: the log's first line, a new ticket). Returns the change as committed (its event
    /// numbered).
    func commitEffects(of change: Change, in tenant: TenantID, _ inboxLines: [InboxLine], _ batch: WriteBatch,
                       _ memory: inout TenantMemory, ticketLine: TicketLogLine? = nil, first: Bool = false) throws -> Change {
        var committed = change
        try append(inboxLines, batch, &memory)
        if let event = change.event {
            // The event is that line (an entry's, or a new ticket's first): its line names it.
            var stored = false
            if let line = ticketLine, event.call == nil, event.ticket == line.ticket, event.entry == line.entry {
                stored = event.kind == .created ? first && line.entry == nil : event.kind == .entry && line.entry != nil
            }
            committed.event = try appendEvent(event, in: tenant, storedWithTicketLine: stored, batch, &memory)
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
