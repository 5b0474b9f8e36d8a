import DesklineProtocol
import NIOCore

/// One line the IRC dialect sends (RFC 1459 framing with IRCv3 message tags): tags, a source,
/// a command or numeric, middle parameters and an optional trailing one.
///
/// Whatever reaches a parameter from data (a subject, a name, a message) is made safe here, as
/// ``ServerLine`` does for the native dialect: control characters cannot break the line, a
/// middle parameter never holds a space, starts with `:` or is empty.
struct IRCLine: Sendable, Equatable {
    var tags: [(key: String, value: String)] = []
    var source: String?
    var command: String
    var params: [String]
    /// The last parameter, always written after ` :`.
    var trailing: String?

    init(tags: [(key: String, value: String)] = [], source: String?, _ command: String, _ params: [String] = [], trailing: String? = nil) {
        self.tags = tags
        self.source = source
        self.command = command
        self.params = params
        self.trailing = trailing
    }

    static func == (a: IRCLine, b: IRCLine) -> Bool {
        a.tags.map(\.key) == b.tags.map(\.key) && a.tags.map(\.value) == b.tags.map(\.value)
            && a.source == b.source && a.command == b.command && a.params == b.params && a.trailing == b.trailing
    }

    /// The wire form without the line ending.
    func serialized() -> String {
        var out = ""
        if !tags.isEmpty {
            out += "@"
            // (Escaping leaves no space, CR or LF in a value; lines with NUL never get this far.)
            out += tags.map { $0.value.isEmpty ? $0.key : $0.key + "=" + TagValue.escape($0.value) }
                .joined(separator: ";")
            out += " "
        }
        if let source {
            out += ":"
            out += Self.middle(source)
            out += " "
        }
        out += command
        for p in params {
            out += " "
            out += Self.middle(p)
        }
        if let trailing {
            out += " :"
            out += ServerLine.clean(trailing)
        }
        return out
    }

    /// The most bytes of a line without its tags and `\r\n` (RFC 1459's 512 with the ending).
    static let maximumBytes = 510

    /// The wire form with its `\r\n`, ready for an ``Outbox``. A message or notice too long for
    /// a client's 512-byte lines (4,000-character messages, long replies) becomes several lines
    /// with the same tags, source and target, cut between words where it can be.
    var encoded: ByteBuffer {
        var text = ""
        for line in split() {
            text += line.serialized()
            text += "\r\n"
        }
        return ByteBuffer(string: text)
    }

    /// Lines whose text is cut into several lines when too long; any other line's text is
    /// shortened to fit.
    static let splittable: Set<String> = ["PRIVMSG", "NOTICE", "372", "353"]

    /// This line, or the lines it is cut into (see ``encoded``). Only the first part keeps the
    /// `label` and `msgid` tags: they name one line.
    func split() -> [IRCLine] {
        guard let trailing else { return [self] }
        var bare = self
        bare.tags = []
        bare.trailing = ""
        let room = Self.maximumBytes - bare.serialized().utf8.count
        let clean = ServerLine.clean(trailing)
        guard clean.utf8.count > room, room >= 64 else { return [self] }
        guard Self.splittable.contains(command) else {
            var cut = self
            cut.trailing = Self.prefix(clean, bytes: room - 3) + "..."
            return [cut]
        }
        var parts: [String] = []
        var rest = Substring(clean)
        while rest.utf8.count > room {
            // The longest prefix that fits, ending on a whole scalar; then back to a space.
            var end = rest.startIndex
            var bytes = 0
            for index in rest.unicodeScalars.indices {
                let size = rest.unicodeScalars[index].utf8.count
                if bytes + size > room { break }
                bytes += size
                end = rest.unicodeScalars.index(after: index)
            }
            if let space = rest[..<end].lastIndex(of: " "), rest.distance(from: rest.startIndex, to: space) > 0 {
                end = rest.index(after: space)
            }
            parts.append(String(rest[..<end]))
            rest = rest[end...]
        }
        if !rest.isEmpty { parts.append(String(rest)) }
        return parts.enumerated().map { index, part in
            var line = self
            line.trailing = part
            if index > 0 { line.tags.removeAll { $0.key == "label" || $0.key == "msgid" } }
            return line
        }
    }

    /// The longest prefix of `s` of at most `bytes` UTF-8 bytes that ends on a whole scalar.
    static func prefix(_ s: String, bytes: Int) -> String {
        var out = String.UnicodeScalarView()
        var used = 0
        for scalar in s.unicodeScalars {
            used += scalar.utf8.count
            if used > bytes { break }
            out.append(scalar)
        }
        return String(out)
    }

    /// A middle parameter: no space, no leading `:`, never empty.
    static func middle(_ s: String) -> String {
        if s.isEmpty { return "*" }
        var w = ServerLine.clean(s)
        if w.contains(" ") { w = String(w.map { $0 == " " ? "_" : $0 }) }
        if w.unicodeScalars.first == ":" { w = "_" + String(w.unicodeScalars.dropFirst()) }
        return w
    }
}
