import DesklineProtocol
import Testing

struct ClientMessageTests {
    @Test func commandIsCaseInsensitive() throws {
        let m = try #require(try ClientMessage.parse("login a@b.c pw"))
        #expect(m.verb == "LOGIN")
        #expect(m.command == "login")
    }

    @Test func restOfLineKeepsSpacesWithoutColon() throws {
        let m = try #require(try ClientMessage.parse("LOGIN a@b.c my  secret pass"))
        #expect(m.params == ["a@b.c", "my", "secret", "pass"])
        #expect(m.rest(from: 1) == "my  secret pass")
    }

    @Test func restOfLineDropsTrailingSpacesOnlyWithoutColon() throws {
        let bare = try #require(try ClientMessage.parse("LOGIN a@b.c pass word   \r\n"))
        #expect(bare.rest(from: 1) == "pass word")
        let exact = try #require(try ClientMessage.parse("LOGIN a@b.c :pass word   "))
        #expect(exact.rest(from: 1) == "pass word   ")
    }

    /// Found by the grammar fuzzer: U+0602 is a prepended mark, so "\u{602} " is one Character,
    /// and trimming the trailing space by Character dropped the mark (and the last word) with it.
    @Test func restOfLineKeepsAPrependedMarkBeforeATrailingSpace() throws {
        let m = try #require(try ClientMessage.parse("MSG #1 c \u{602} "))
        #expect(m.params == ["#1", "c", "\u{602}"])
        #expect(m.rest(from: 1) == "c \u{602}")
    }

    @Test func tagsSplitOnSeparatorsFollowedByCombiningMarks() throws {
        let m = try #require(try ClientMessage.parse("@a=1;\u{301}label=\u{301}x PING"))
        #expect(m.tags["\u{301}label"] == "\u{301}x")
        #expect(m.tags["a"] == "1")
        let eq = try #require(try ClientMessage.parse("@label=\u{301}y PING"))
        #expect(eq.label == "\u{301}y")
        #expect(ClientMessage.label(inUnparsedLine: "@label=z \u{301}\0") == "z")
    }

    @Test func labelOfAnUnparsableLine() {
        #expect(ClientMessage.label(inUnparsedLine: #"@a=1;label=x\sy"#) == "x y")
        #expect(ClientMessage.label(inUnparsedLine: "@label=ok :src") == "ok")
        #expect(ClientMessage.label(inUnparsedLine: "PING") == nil)
        #expect(ClientMessage.label(inUnparsedLine: "@label= X") == nil)
    }

    @Test func restOfLineWithColonIsTheTrailingParameter() throws {
        let m = try #require(try ClientMessage.parse("LOGIN a@b.c :my  secret pass"))
        #expect(m.params == ["a@b.c", "my  secret pass"])
        #expect(m.rest(from: 1) == "my  secret pass")
    }

    @Test func restOfLineStartsAtTheParameterNotAtExtraSpaces() throws {
        let m = try #require(try ClientMessage.parse("LOGIN   a@b.c    pass word"))
        #expect(m.rest(from: 1) == "pass word")
        #expect(m.rest(from: 2) == "word")
        #expect(m.rest(from: 3) == nil)
    }

    @Test func restOfLineAfterTags() throws {
        let m = try #require(try ClientMessage.parse("@label=x;a=b LOGIN a@b.c p w"))
        #expect(m.label == "x")
        #expect(m.rest(from: 1) == "p w")
    }

    @Test func lineEndingsAreTolerated() throws {
        let m = try #require(try ClientMessage.parse("PING x\r\n"))
        #expect(m.params == ["x"])
    }

    @Test func blankLinesAreNil() throws {
        #expect(try ClientMessage.parse("") == nil)
        #expect(try ClientMessage.parse("    ") == nil)
        #expect(try ClientMessage.parse("\r") == nil)
    }

    @Test func tagsWithoutCommandAreAnError() {
        #expect(throws: ParseError.missingCommand) { try ClientMessage.parse("@label=1") }
        #expect(throws: ParseError.missingCommand) { try ClientMessage.parse("@label=1 :source") }
    }

    @Test func commandMustBeLettersAndDigits() throws {
        #expect(throws: ParseError.invalidCommand("#1")) { try ClientMessage.parse("#1 hello") }
        #expect(throws: ParseError.invalidCommand("LOGIN\u{1B}[2J")) { try ClientMessage.parse("LOGIN\u{1B}[2J x") }
        // ASCII only: letters of other scripts, and symbols at either edge of the ranges, are not.
        for bad in ["MSGé", "ÉTAT", "ЛОГИН", "MSG_", "MSG@", "[MSG", "`MSG", "MSG{", "MSG/", "MSG:"] {
            #expect(throws: ParseError.invalidCommand(bad)) { try ClientMessage.parse(bad + " x") }
        }
        #expect(try ClientMessage.parse("Msg09az x")?.verb == "MSG09AZ")
    }

    @Test func parametersAreCappedAndTheLastTakesTheRest() throws {
        let words = (1...10_000).map(String.init).joined(separator: " ")
        let m = try #require(try ClientMessage.parse("MSG " + words))
        #expect(m.params.count == ClientMessage.maximumParameters)
        #expect(m.params[13] == "14")
        #expect(m.params[14].hasPrefix("15 16 17"))
        #expect(m.params[14].hasSuffix("9999 10000"))
        #expect(m.rest(from: 0) == words)
    }

    @Test func tagValuesAreUnescaped() throws {
        let m = try #require(try ClientMessage.parse(#"@label=a\sb\:c\\d CMD"#))
        #expect(m.label == #"a b;c\d"#)
    }

    @Test func tagEscapingRoundTrips() {
        for value in ["plain", "a b", "x;y", "back\\slash", "cr\rlf\n", "", "trailing\\"] {
            #expect(TagValue.unescape(Substring(TagValue.escape(value))) == value)
        }
    }
}
