// libFuzzer target for the line grammar (DesklineProtocol), built by Scripts/fuzz-grammar with
// `swiftc -sanitize=fuzzer,address` together with Sources/DesklineProtocol/*.swift.
//
// Beyond "does not crash", it checks the grammar's promises on every input:
// - `rest(from:)` of each parameter is consistent with the parameters it covers;
// - a server line built from anything parsed never contains CR, LF or NUL, and parses back;
// - tag escaping round-trips.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let text = String(validating: bytes, as: UTF8.self) else { return 0 }
    guard let message = try? ClientMessage.parse(text) else { return 0 }
    for i in message.params.indices {
        guard let rest = message.rest(from: i) else { fatalError("rest(from: \(i)) is nil for an existing parameter") }
        // (Without a colon the rest drops trailing spaces; the next parameter may keep them.)
        // (By scalar: a space after a prepended mark such as U+0602 is one Character with it.)
        var next = i < message.params.count - 1 ? Substring(message.params[i + 1]).unicodeScalars : Substring("").unicodeScalars
        while next.last == " " { next = next.dropLast() }
        if !next.isEmpty, !containsBytes(rest, Substring(next)) {
            fatalError("rest(from: \(i)) = \(rest.debugDescription) misses parameter \(i + 1)")
        }
    }
    if message.rest(from: message.params.count) != nil { fatalError("rest past the end") }
    let line = ServerLine(label: message.label, .rpl, message.command, message.params, text: message.params.last)
    let wire = line.serialized()
    if wire.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) { fatalError("line break on the wire: \(wire.debugDescription)") }
    guard (try? ClientMessage.parse(wire)) != nil else { fatalError("serialized line does not parse: \(wire.debugDescription)") }
    for value in message.tags.values where TagValue.unescape(Substring(TagValue.escape(value))) != value {
        fatalError("tag value does not round-trip: \(value.debugDescription)")
    }
    return 0
}

/// Byte-wise search: `String.contains` compares grapheme clusters, and a parameter may start with
/// a combining mark that clusters with the `:` before it.
func containsBytes(_ haystack: String, _ needle: Substring) -> Bool {
    let h = Array(haystack.utf8), n = Array(needle.utf8)
    guard n.count <= h.count else { return false }
    return (0...(h.count - n.count)).contains { h[$0..<($0 + n.count)].elementsEqual(n) }
}
