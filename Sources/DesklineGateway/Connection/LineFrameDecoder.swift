import NIOCore

/// One framed unit of client input.
public enum LineFrame: Sendable, Equatable {
    /// A complete line without its `\n` / `\r\n`.
    case line(ByteBuffer)
    /// A line longer than the maximum was discarded (once per overlong line).
    case tooLong
}

/// Splits input on LF (a preceding CR is dropped), with a hard maximum line length, one line at
/// a time: the caller takes a line when it has room for one, so input it does not want yet stays
/// undecoded (see `SessionHandler`, which reads ahead at most a fixed number of lines).
///
/// Unlike `LineBasedFrameDecoder` wrapped in `ByteToMessageHandler(maximumBufferSize:)`, which
/// fails the whole channel once the limit is hit, this discards the overlong line — without ever
/// buffering more than `maximumLineBytes` of it — reports it once as ``LineFrame/tooLong`` and
/// carries on with the next line. A client that sends one bad line gets an error and keeps its
/// session, as on mature IRC servers (Ergo's ERR_INPUTTOOLONG).
struct LineFramer {
    private let maximumLineBytes: Int
    private var discarding = false
    /// How far the buffer was already searched for a newline, so long partial lines are not
    /// rescanned from the start on every read.
    private var scanned = 0

    init(maximumLineBytes: Int) {
        precondition(maximumLineBytes > 0)
        self.maximumLineBytes = maximumLineBytes
    }

    /// The next frame in `buffer`, consuming it; nil when no complete line is there (the part
    /// of a line seen so far stays in `buffer`, except an overlong one's, which is dropped).
    mutating func next(_ buffer: inout ByteBuffer) -> LineFrame? {
        while true {
            let view = buffer.readableBytesView
            guard let newline = view[(view.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n")) else {
                // No newline yet. +1 leaves room for the CR of a line that is exactly at the limit.
                if discarding || buffer.readableBytes > maximumLineBytes + 1 {
                    buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                    scanned = 0
                    if !discarding {
                        discarding = true
                        return .tooLong
                    }
                    return nil
                }
                scanned = buffer.readableBytes
                return nil
            }
            let length = newline - view.startIndex
            scanned = 0
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discarding = false
                continue
            }
            var line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            return frame(&line)
        }
    }

    /// At the end of input: what is left without a newline still counts as a last line
    /// (`printf 'QUIT' | nc -N`). Call once ``next(_:)`` returns nil.
    mutating func last(_ buffer: inout ByteBuffer) -> LineFrame? {
        defer {
            discarding = false
            scanned = 0
        }
        guard buffer.readableBytes > 0 else { return nil }
        var line = buffer.readSlice(length: buffer.readableBytes)!
        return discarding ? nil : frame(&line)
    }

    private func frame(_ line: inout ByteBuffer) -> LineFrame {
        if line.readableBytesView.last == UInt8(ascii: "\r") {
            line.moveWriterIndex(to: line.writerIndex - 1)
        }
        return line.readableBytes > maximumLineBytes ? .tooLong : .line(line)
    }
}

/// ``LineFramer`` as a pipeline decoder, which decodes every line it is given at once (for tools
/// and tests; the server's sessions frame their own input to bound what they read ahead).
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = LineFrame

    private var framer: LineFramer

    public init(maximumLineBytes: Int) {
        self.framer = LineFramer(maximumLineBytes: maximumLineBytes)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = framer.next(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if seenEOF, let frame = framer.last(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(frame))
        }
        return .needMoreData
    }
}
