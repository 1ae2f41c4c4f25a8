/* null-deref: read through a NULL pointer -> #PF in the guest; the monitor must report a crash. */
#include <stdio.h>
int main(void)
{
    volatile int *p = (volatile int *)0;
    printf("about to dereference NULL\n");
    fflush(stdout);
    return *p;
}
