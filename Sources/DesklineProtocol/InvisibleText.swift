/// Characters that change how text around them is shown without being seen themselves.
public enum InvisibleText {
    /// Bidirectional embeddings, overrides, isolates and marks, and line/paragraph separators:
    /// U+200E/F, U+202A-E, U+2066-9, U+061C, U+2028/9. (Zero-width joiners stay: emoji sequences
    /// need them.) Stored text has them removed (DesklineCore's `InputRules`); a line the server
    /// sends shows any that are echoed back as `?` (``ServerLine/clean(_:)``).
    public static func isFormatting(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0x061C, 0x2028, 0x2029: true
        default: false
        }
    }
}
