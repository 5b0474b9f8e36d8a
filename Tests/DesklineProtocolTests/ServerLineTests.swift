import DesklineProtocol
import Testing

struct ServerLineTests {
    @Test func okWithLabelAndText() {
        let line = ServerLine(label: "abc", .ok, "LOGIN", ["customer", "acme"], text: "Welcome, Ann")
        #expect(line.serialized() == "@label=abc OK LOGIN customer acme :Welcome, Ann")
        #expect(line.isTerminal)
    }

    @Test func errorLine() {
        let line = ServerLine.error(command: "ME", code: "NOT_LOGGED_IN", text: "Log in first")
        #expect(line.serialized() == "ERR ME NOT_LOGGED_IN :Log in first")
        #expect(line.isTerminal)
    }

    @Test func dataAndEventLinesAreNotTerminal() {
        #expect(!ServerLine(.rpl, "ME", ["email"], text: "a@b.c").isTerminal)
        #expect(!ServerLine(.event, "PING", text: "x").isTerminal)
    }

    @Test func labelIsEscaped() {
        #expect(ServerLine(label: "a b;c", .ok, "PING").serialized() == #"@label=a\sb\:c OK PING"#)
    }

    @Test func lineBreaksCannotBeInjected() {
        let line = ServerLine(.rpl, "ME\r\nOK", ["na\nme"], text: "Evil\r\nEVENT SHUTDOWN :fake")
        let wire = line.serialized()
        #expect(!wire.contains("\r"))
        #expect(!wire.contains("\n"))
        #expect(wire == #"RPL ME\s\sOK na\sme :Evil  EVENT SHUTDOWN :fake"#)
    }

    @Test func controlCharactersNeverReachTheWire() {
        let line = ServerLine(label: "l\u{1B}[31m\u{0}", .err, "X\u{7}", ["a\u{1B}b"], text: "t\u{9B}2J\u{85}\tz")
        #expect(line.serialized() == #"@label=l?[31m\s ERR X? a?b :t?2J?"# + "\tz")
    }

    @Test func invisibleDirectionCharactersAreShownNotObeyed() {
        // U+202E (right-to-left override) in an echoed ping token or label would turn the rest
        // of the line around on the reader's screen.
        let line = ServerLine(label: "a\u{202E}b\u{2066}", .ok, "PING", ["w\u{200F}"], text: "x\u{202E}gnp.exe\u{2028}\u{61C}y")
        #expect(line.serialized() == "@label=a?b? OK PING w? :x?gnp.exe??y")
        // Joiners of emoji sequences stay.
        #expect(ServerLine(.ok, "PING", text: "\u{1F469}\u{200D}\u{1F4BB}").serialized() == "OK PING :\u{1F469}\u{200D}\u{1F4BB}")
    }

    @Test func combiningMarksCannotHideSpacesOrColons() throws {
        // " \u{313}" and ":\u{313}" are single Characters; escaping must still see the space and colon.
        let line = ServerLine(label: "a \u{313}b", .rpl, "X", [" \u{313}k", ":\u{313}c"], text: "t")
        let wire = line.serialized()
        let parsed = try #require(try ClientMessage.parse(wire))
        #expect(parsed.label == "a \u{313}b")
        #expect(parsed.params.map { TagValue.unescape(Substring($0)) } == ["X", " \u{313}k", "_\u{313}c", "t"])
    }

    @Test func middleParametersStayOneWord() {
        let wire = ServerLine(.rpl, "X", ["", ":colon", "two words", #"back\slash;semi"#]).serialized()
        #expect(wire == #"RPL X * _colon two\swords back\\slash\:semi"#)
        let reparsed = try? ClientMessage.parse(wire)
        #expect(reparsed?.params.map { TagValue.unescape(Substring($0)) } == ["X", "*", "_colon", "two words", #"back\slash;semi"#])
    }
}
