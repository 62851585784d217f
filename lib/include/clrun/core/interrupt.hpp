// Ctrl-C / SIGTERM handling: the first signal only sets a flag that the trainer checks between
// steps, so any write in progress finishes; a second one kills the process the default way.
#pragma once

namespace clrun {

void install_interrupt_handler();
bool interrupt_requested();
/// Sets the flag as SIGINT would (tests, embedding applications).
void request_interrupt();
void clear_interrupt();

}  // namespace clrun
