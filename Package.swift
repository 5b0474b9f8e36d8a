// swift-tools-version:6.3
import PackageDescription

let package = Package(
    name: "Deskline",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "deskline", targets: ["deskline"]),
        .library(name: "DesklineGateway", targets: ["DesklineGateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // Line grammar: parse and serialize IRC-style messages. Pure, no I/O.
        .target(name: "DesklineProtocol"),
        // Domain types, access policy, services and the Store port. No NIO, no file paths.
        .target(
            name: "DesklineCore",
            dependencies: [
                // Only for the text rules the wire and the store share (InvisibleText); Core writes
                // no wire text.
                "DesklineProtocol",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // File-backed implementation of the Store port.
        .target(
            name: "DesklineStore",
            dependencies: [
                "DesklineCore",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // PostgreSQL implementation of the Store port, its schema migrations and the event feed
        // across nodes (LISTEN/NOTIFY as a doorbell, the event log as the truth).
        .target(
            name: "DesklinePostgres",
            dependencies: [
                "DesklineCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // For the test suites only (no product links it): the local PostgreSQL server the tests
        // share (Scripts/postgres-dev), and fresh schemas on it.
        .target(
            name: "DesklinePostgresTesting",
            dependencies: [
                "DesklineCore",
                "DesklinePostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // SwiftNIO listener, sessions, command dispatch. Talks to storage only through Core's
        // Store port (the executables choose the store); knows DesklinePostgres only for the
        // settings config.json holds (storage.postgres).
        .target(
            name: "DesklineGateway",
            dependencies: [
                "DesklineProtocol",
                "DesklineCore",
                "DesklinePostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Thin command-line front end.
        .executableTarget(
            name: "deskline",
            dependencies: [
                "DesklineGateway",
                "DesklineCore",
                "DesklineStore",
                "DesklinePostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Benchmarks (`Scripts/bench-store`, `Scripts/bench`, `Scripts/bench-nodes`); build in
        // release mode. PostgreSQL for `--backend postgres` and the fan-out across nodes.
        .executableTarget(
            name: "deskline-bench",
            dependencies: [
                "DesklineCore",
                "DesklineStore",
                "DesklinePostgres",
                "DesklineGateway",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // libFuzzer target for the command dispatcher (`Scripts/fuzz-dispatch`); a stub otherwise.
        .executableTarget(
            name: "deskline-fuzz",
            dependencies: [
                "DesklineGateway",
                "DesklineCore",
                "DesklineStore",
                "DesklineProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "DesklineProtocolTests",
            dependencies: ["DesklineProtocol"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "DesklineCoreTests",
            dependencies: ["DesklineCore", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "DesklineStoreTests",
            dependencies: [
                "DesklineStore",
                "DesklineCore",
                "DesklinePostgres",
                "DesklinePostgresTesting",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "DesklineGatewayTests",
            dependencies: [
                "DesklineGateway",
                "DesklineCore",
                "DesklineStore",
                "DesklinePostgres",
                "DesklinePostgresTesting",
                "DesklineProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
