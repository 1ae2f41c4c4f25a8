/* exit-code: read the request, write "bye" to stderr, exit 3. */
#include <unistd.h>

int main(void)
{
    char buf[4096];
    while (read(0, buf, sizeof buf) > 0)
        ;
    (void)write(2, "bye", 3);
    return 3;
}
