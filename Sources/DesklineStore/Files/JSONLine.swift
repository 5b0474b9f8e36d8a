import DesklineCore
import Foundation

/// The JSON of the lines every message writes (its ticket log line and its inbox lines), by
/// hand: Foundation's `JSONEncoder` was about a tenth of the server's CPU under load.
///
/// The bytes are exactly those of ``FileStore/lineEncoder`` (sorted keys, no escaped slashes,
/// absent optionals left out, dates as ``Timestamp``); a test compares the two on awkward values.
/// A field added to `Ticket`, `TicketEntry` or `Notification` must be added here too (the test
/// fails once the new field is set in it).
/// Reading still goes through `JSONDecoder`.
struct JSONLine {
    private(set) var bytes: [UInt8] = []
    /// Per open object: whether a member was written (so the next needs a comma).
    private var members: [Bool] = []

    init(capacity: Int = 512) { bytes.reserveCapacity(capacity) }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The finished line, newline included.
    var data: Data {
        var data = Data(bytes)
        data.append(0x0A)
        return data
    }

    mutating func object(_ body: (inout JSONLine) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        members.append(false)
        body(&self)
        members.removeLast()
        bytes.append(UInt8(ascii: "}"))
    }

    /// Starts a member; keys must come in sorted order and need no escaping.
    mutating func key(_ key: StaticString) {
        if members[members.count - 1] { bytes.append(UInt8(ascii: ",")) }
        members[members.count - 1] = true
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func member(_ key: StaticString, _ value: String) { self.key(key); string(value) }
    mutating func member(_ key: StaticString, _ values: [String]) {
        self.key(key)
        bytes.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }
    mutating func member(_ key: StaticString, _ value: Int) { self.key(key); bytes.append(contentsOf: String(value).utf8) }
    mutating func member(_ key: StaticString, _ value: Date) { self.key(key); string(Timestamp.format(value)) }
    mutating func member(_ key: StaticString, _ value: String?) { if let value { member(key, value) } }
    mutating func member(_ key: StaticString, _ value: Int?) { if let value { member(key, value) } }

    /// A JSON string as `JSONEncoder` writes it: `"` and `\` escaped, the short escapes for
    /// backspace, form feed, newline, return and tab, `\u00xx` for other control characters,
    /// everything else (slashes, DEL, non-ASCII) as is.
    mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for (i, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i]))
                start = i + 1
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                default:
                    let hex = Self.hexDigits
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
                }
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension JSONLine {
    mutating func value(_ ticket: Ticket) {
        object { o in
            o.member("assigneeId", ticket.assigneeId?.rawValue)
            o.member("assigneeName", ticket.assigneeName)
            o.member("createdAt", ticket.createdAt)
            o.member("customerId", ticket.customerId.rawValue)
            o.member("customerUnread", ticket.customerUnread)
            o.member("id", ticket.id.number)
            o.member("lastSeq", ticket.lastSeq)
            o.member("noteCount", ticket.noteCount)
            o.member("status", ticket.status.rawValue)
            o.member("subject", ticket.subject)
            o.member("tenantId", ticket.tenantId.rawValue)
            o.member("updatedAt", ticket.updatedAt)
        }
    }

    mutating func value(_ entry: TicketEntry) {
        object { o in
            o.member("at", entry.at)
            o.member("authorId", entry.authorId.rawValue)
            o.member("authorName", entry.authorName)
            o.member("authorRole", entry.authorRole.rawValue)
            o.member("kind", entry.kind.rawValue)
            o.member("note", entry.note)
            o.member("seq", entry.seq)
            o.member("text", entry.text)
        }
    }

    static func line(_ line: TicketLogLine) -> Data {
        var json = JSONLine()
        json.object { o in
            if let entry = line.entry {
                o.key("entry")
                o.value(entry)
            }
            o.key("ticket")
            o.value(line.ticket)
        }
        return json.data
    }

    static func line(_ n: DesklineCore.Notification) -> Data {
        var json = JSONLine(capacity: 256)
        json.object { o in
            o.member("actorName", n.actorName)
            o.member("at", n.at)
            o.member("call", n.call?.number)
            o.member("id", n.id)
            o.member("text", n.text)
            o.member("ticket", n.ticket?.number)
            o.member("type", n.type)
        }
        return json.data
    }

    /// An event-log line. A call request (rare) goes through `JSONEncoder`. With `stored`, the
    /// event's ticket and entry are left out: they are the ticket log's line of that entry (or,
    /// for a new ticket, its first line), which ``StoredEventRef`` names instead.
    static func line(_ event: TicketEvent, stored: Bool = false) throws -> Data {
        var json = JSONLine(capacity: stored ? 256 : 768)
        let call = try event.call.map { try FileStore.lineEncoder.encode($0) }
        json.object { o in
            o.key("actor")
            o.object { a in
                a.member("id", event.actor.id.rawValue)
                a.member("name", event.actor.name)
                a.member("role", event.actor.role.rawValue)
            }
            o.member("at", event.at)
            if let call {
                o.key("call")
                o.bytes.append(contentsOf: call)
            }
            o.member("customerUserId", event.customerUserId?.rawValue)
            if !stored, let entry = event.entry {
                o.key("entry")
                o.value(entry)
            }
            o.member("kind", event.kind.rawValue)
            o.member("originSession", event.originSession?.description)
            o.member("recipients", event.recipients.map(\.rawValue))
            o.member("seq", event.seq)
            if stored, let ticket = event.ticket {
                o.key("stored")
                o.object { r in
                    r.member("note", event.entry?.note)
                    r.member("seq", event.entry?.seq)
                    r.member("ticket", ticket.id.number)
                }
            }
            o.member("tenantId", event.tenantId.rawValue)
            if !stored, let ticket = event.ticket {
                o.key("ticket")
                o.value(ticket)
            }
        }
        return json.data
    }
}
