import ArgumentParser
import NIOPosix
import DesklineGateway
import DesklineStore
import DesklineCore
import Crypto
import _CryptoExtras
import NIOExtras
import ServiceLifecycle
print("x")
