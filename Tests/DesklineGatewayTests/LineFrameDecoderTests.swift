@testable import DesklineGateway
import NIOCore
import NIOEmbedded
import Testing

struct LineFrameDecoderTests {
    func channel(max: Int = 16) throws -> EmbeddedChannel {
        EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maximumLineBytes: max)))
    }

    func lines(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while let frame = try channel.readInbound(as: LineFrame.self) {
            switch frame {
            case .line(let b): out.append(String(buffer: b))
            case .tooLong: out.append("<too long>")
            }
        }
        return out
    }

    @Test func splitsOnLFAndCRLF() throws {
        let ch = try channel()
        try ch.writeInbound(ByteBuffer(string: "ONE\r\nTWO\nTHR"))
        try ch.writeInbound(ByteBuffer(string: "EE\r\n"))
        #expect(try lines(ch) == ["ONE", "TWO", "THREE"])
    }

    @Test func overlongLineIsReportedOnceAndTheNextLineWorks() throws {
        let ch = try channel(max: 16)
        try ch.writeInbound(ByteBuffer(string: String(repeating: "x", count: 10)))
        try ch.writeInbound(ByteBuffer(string: String(repeating: "x", count: 100)))
        try ch.writeInbound(ByteBuffer(string: String(repeating: "y", count: 100) + "\nPING\n"))
        #expect(try lines(ch) == ["<too long>", "PING"])
    }

    @Test func overlongCompleteLineInOneReadIsRefused() throws {
        let ch = try channel(max: 16)
        try ch.writeInbound(ByteBuffer(string: String(repeating: "z", count: 17) + "\nOK\n"))
        #expect(try lines(ch) == ["<too long>", "OK"])
    }

    @Test func lineExactlyAtTheLimitIsAccepted() throws {
        let ch = try channel(max: 16)
        let sixteen = String(repeating: "a", count: 16)
        try ch.writeInbound(ByteBuffer(string: sixteen + "\r\n"))
        #expect(try lines(ch) == [sixteen])
    }

    @Test func neverBuffersMoreThanTheLimit() throws {
        let ch = try channel(max: 1024)
        let chunk = ByteBuffer(repeating: UInt8(ascii: "a"), count: 4096)
        for _ in 0..<256 { try ch.writeInbound(chunk) } // 1 MiB without a newline
        #expect(try lines(ch) == ["<too long>"])
        try ch.writeInbound(ByteBuffer(string: "\nQUIT\n"))
        #expect(try lines(ch) == ["QUIT"])
    }

    @Test func lastLineWithoutNewlineIsDeliveredAtEOF() throws {
        let ch = try channel()
        try ch.writeInbound(ByteBuffer(string: "PING\nQUIT"))
        #expect(try lines(ch) == ["PING"])
        // The client half-closes (`nc -N`): the unterminated last line still counts.
        ch.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(try lines(ch) == ["QUIT"])
    }
}
