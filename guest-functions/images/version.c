/* snapcall/version: waits $delay_ms, then prints "$version\n". The provider tests deploy it
 * twice under one name to see a call in flight finish on the version it started on. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    const char *version = getenv("version");
    const char *delay = getenv("delay_ms");
    long ms = delay ? atol(delay) : 0;
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    printf("%s\n", version ? version : "unset");
    return 0;
}
