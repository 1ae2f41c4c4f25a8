/* infinite-loop: spins forever without syscalls; only the monitor's deadline can stop it. */
#include <unistd.h>
int main(void)
{
    static char c;
    (void)read(0, &c, 1); /* let a snapshot be taken first */
    volatile unsigned long x = 0;
    for (;;)
        x++;
}
